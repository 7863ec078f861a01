//! Test harness: the `heet` binary, the plugins built from source, and one moto server per
//! test process on a free loopback port, plus an independent view of what moto holds.

pub mod model;

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// `target/<profile>` of the running test binary (`target/<profile>/deps/tests-…`).
fn target_profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_owned()
}

/// The cargo target folder of this build.
pub fn target_dir() -> PathBuf {
    target_profile_dir().parent().unwrap().to_owned()
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// The `heet` binary. `cargo test --workspace` builds it (host has an integration test), with
/// the same features as everything else; only when it is missing or older than the sources
/// (e.g. `cargo test -p tests` alone after an edit) is it built here.
pub fn heet_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let bin = target_profile_dir().join("heet");
        let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
        let newest = newest_source(&[repo_root().join("host"), repo_root().join("wit")]);
        if built.is_none_or(|b| newest.is_some_and(|n| n > b)) {
            let status = cargo()
                .args(["build", "-q", "-p", "heet", "--bin", "heet"])
                .current_dir(repo_root())
                .status()
                .unwrap();
            assert!(status.success(), "cargo build -p heet failed");
        }
        bin
    })
}

fn newest_source(dirs: &[PathBuf]) -> Option<std::time::SystemTime> {
    let mut newest = None;
    let mut stack: Vec<PathBuf> = dirs.to_vec();
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(modified) = entry.metadata().and_then(|m| m.modified()) {
                newest = newest.max(Some(modified));
            }
        }
    }
    newest
}

/// Every reference plugin and test fixture, by crate name.
pub const PLUGINS: [&str; 13] = [
    "naming",
    "guard",
    "sizing",
    "cname",
    "cloud-init",
    "tags",
    "task-env",
    "trap",
    "chain",
    "liar",
    "loud",
    "sneaky",
    "v010",
];

/// The reference plugins the customers example runs, in its `plugins.order`.
pub const CUSTOMERS_PLUGINS: [&str; 6] =
    ["sizing", "naming", "tags", "cname", "cloud-init", "guard"];

/// The reference plugins the webapp example runs, in its `plugins.order`: the customers'
/// and task-env, which shapes its scenarios' tasks.
pub const WEBAPP_PLUGINS: [&str; 7] = [
    "sizing",
    "naming",
    "tags",
    "cname",
    "cloud-init",
    "guard",
    "task-env",
];

/// The plugins and fixtures, built from source with `heet plugins build` once per process.
pub fn plugin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = target_profile_dir().join("heet-test-plugins");
        let mut build = Command::new(heet_bin());
        build.args(["plugins", "build", "--out"]).arg(&out);
        for p in PLUGINS {
            build.args(["-p", p]);
        }
        let output = build
            .arg("--manifest-path")
            .arg(repo_root().join("Cargo.toml"))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "heet plugins build failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        out
    })
}

/// The reference plugins written in other languages, by folder under `plugins/`: built from
/// source with `heet plugins build` (jco, componentize-py) into [`plugin_dir`] once per
/// process, on first use.
pub const OTHER_LANGUAGES: [&str; 2] = ["guard-js", "naming-py"];

/// The folder holding the built plugins and the other languages' reference plugins.
pub fn all_plugins_dir() -> &'static Path {
    static BUILT: OnceLock<()> = OnceLock::new();
    let dir = plugin_dir();
    BUILT.get_or_init(|| {
        for folder in OTHER_LANGUAGES {
            let output = Command::new(heet_bin())
                .args(["plugins", "build", "--manifest-path"])
                .arg(
                    repo_root()
                        .join("plugins")
                        .join(folder)
                        .join("heet-plugin.toml"),
                )
                .arg("--out")
                .arg(dir)
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "heet plugins build of {folder} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
    });
    dir
}

/// A ledger page's entries, decoded as docs/cli.md describes pages: `z:` and the base64 of
/// the deflated JSON object (or, as heet wrote them before, the JSON itself).
pub fn ledger_page(value: &str) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    use base64::Engine as _;
    use std::io::Read as _;
    let json = match value.strip_prefix("z:") {
        Some(packed) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(packed)
                .map_err(|e| e.to_string())?;
            let mut json = String::new();
            flate2::read::DeflateDecoder::new(bytes.as_slice())
                .read_to_string(&mut json)
                .map_err(|e| e.to_string())?;
            json
        }
        None => value.to_owned(),
    };
    serde_json::from_str(&json).map_err(|e| e.to_string())
}

/// A raw Query API call (EC2, IAM, ...) to `endpoint`: the status and the body, whatever
/// they are. A dropped connection is status 0.
pub fn call(endpoint: &str, service: &str, params: &[(&str, &str)]) -> (u16, String) {
    call_as(endpoint, DEFAULT_KEY, service, params)
}

/// As [`call`], signed (as far as moto looks) with the access key `key`: moto answers for
/// the account the key belongs to.
pub fn call_as(endpoint: &str, key: &str, service: &str, params: &[(&str, &str)]) -> (u16, String) {
    let mut form = vec![(
        "Version",
        match service {
            "iam" => "2010-05-08",
            "sts" => "2011-06-15",
            "cloudformation" => "2010-05-15",
            "elasticloadbalancing" => "2015-12-01",
            _ => "2016-11-15",
        },
    )];
    form.extend_from_slice(params);
    let response = ureq::post(format!("{endpoint}/"))
        .header("Authorization", auth_as(key, service))
        .config()
        .http_status_as_error(false)
        .build()
        .send_form(form);
    let Ok(mut response) = response else {
        return (0, String::new());
    };
    let mut body = String::new();
    response
        .body_mut()
        .as_reader()
        .read_to_string(&mut body)
        .unwrap();
    (response.status().as_u16(), body)
}

/// The text of the first element named `tag` in `xml`, or "".
pub fn xml_text(xml: &str, tag: &str) -> String {
    roxmltree::Document::parse(xml)
        .ok()
        .and_then(|d| {
            d.descendants()
                .find(|n| n.has_tag_name(tag))
                .and_then(|n| n.text().map(str::to_owned))
        })
        .unwrap_or_default()
}

/// The direct children's texts of every `member` element of `xml` (a Query API list), by
/// tag: `[{"UserName": "…", "Path": "…"}, …]`.
pub fn xml_members(xml: &str) -> Vec<std::collections::BTreeMap<String, String>> {
    let Ok(doc) = roxmltree::Document::parse(xml) else {
        return Vec::new();
    };
    doc.descendants()
        .filter(|n| n.has_tag_name("member"))
        .map(|m| {
            m.children()
                .filter(|c| c.is_element())
                .map(|c| {
                    (
                        c.tag_name().name().to_owned(),
                        c.text().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .collect()
}

/// The moto server of this test process.
pub struct Moto {
    pub endpoint: String,
    /// The access key its calls are made with: whose account they see.
    key: String,
    /// The server, for the one value that started it (not for an account's view of it).
    _child: Option<Child>,
}

pub fn moto() -> &'static Moto {
    static MOTO: OnceLock<Moto> = OnceLock::new();
    MOTO.get_or_init(|| Moto::start(&moto_server_command()))
}

/// Where `cargo xtask setup` installs moto's server.
pub fn moto_venv() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default()
        .join(".cache/heet/moto-venv")
}

/// The moto server the tests start: `HEET_MOTO_SERVER`, else the one `cargo xtask setup`
/// installed.
pub fn moto_server_command() -> PathBuf {
    if let Some(path) = std::env::var_os("HEET_MOTO_SERVER") {
        return path.into();
    }
    let venv = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default()
        .join(".cache/heet/moto-venv/bin/moto_server");
    if venv.is_file() {
        venv
    } else {
        "moto_server".into()
    }
}

impl Moto {
    /// Starts `server` on a free loopback port and waits until it answers. It stops when
    /// this value is dropped or this process exits, however it exits.
    pub fn start(server: &Path) -> Moto {
        Moto::start_with(server, &[])
    }

    /// As [`Moto::start`], with moto's own settings in `env` (`INITIAL_NO_AUTH_ACTION_COUNT`).
    pub fn start_with(server: &Path, env: &[(&str, &str)]) -> Moto {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // The shell waits on our pipe and kills moto when this process exits, however it
        // exits: no server outlives its tests.
        let child = Command::new("sh")
            .arg("-c")
            .arg(r#""$0" -H 127.0.0.1 -p "$1" >/dev/null 2>&1 & m=$!; read _; kill $m"#)
            .arg(server)
            .arg(port.to_string())
            // AWS-managed policies (arn:aws:iam::aws:policy/…) exist, as in every account.
            .env("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .spawn()
            .expect("cannot start moto_server: run `cargo xtask setup`");
        let endpoint = format!("http://127.0.0.1:{port}");
        let start = Instant::now();
        while ureq::get(format!("{endpoint}/moto-api/")).call().is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "moto_server did not answer on {endpoint} within 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Moto {
            endpoint,
            key: DEFAULT_KEY.to_owned(),
            _child: Some(child),
        }
    }

    /// This server as `account` sees it: calls made with credentials STS's AssumeRole gives
    /// for a role in that account (moto keeps accounts apart and needs no such role).
    pub fn in_account(&self, account: &str) -> Moto {
        let role = format!("arn:aws:iam::{account}:role/heet-tests");
        let (status, body) = call(
            &self.endpoint,
            "sts",
            &[
                ("Action", "AssumeRole"),
                ("RoleArn", &role),
                ("RoleSessionName", "tests"),
            ],
        );
        assert_eq!(status, 200, "sts AssumeRole: {body}");
        Moto {
            endpoint: self.endpoint.clone(),
            key: xml_text(&body, "AccessKeyId"),
            _child: None,
        }
    }

    /// The access key this view's calls are made with (moto needs no secret to match it).
    pub fn access_key(&self) -> &str {
        &self.key
    }

    /// The account this view's calls are for (STS GetCallerIdentity).
    pub fn account(&self) -> String {
        let (status, body) = call_as(
            &self.endpoint,
            &self.key,
            "sts",
            &[("Action", "GetCallerIdentity")],
        );
        assert_eq!(status, 200, "sts GetCallerIdentity: {body}");
        xml_text(&body, "Account")
    }

    fn auth(&self, service: &str) -> String {
        auth_as(&self.key, service)
    }

    /// Forgets everything moto holds, as if just started.
    pub fn reset(&self) {
        ureq::post(format!("{}/moto-api/reset", self.endpoint))
            .send_empty()
            .expect("moto reset");
    }

    /// A raw EC2 Query API call, bypassing heet entirely.
    pub fn ec2(&self, params: &[(&str, &str)]) -> String {
        let (status, body) = call_as(&self.endpoint, &self.key, "ec2", params);
        assert!(status < 500, "ec2 {params:?}: {status} {body}");
        body
    }

    /// Creates an IAM instance profile (RunInstances refuses a profile that does not exist).
    pub fn instance_profile(&self, name: &str) {
        let response = ureq::post(format!("{}/", self.endpoint))
            .header("Authorization", self.auth("iam"))
            .send_form([
                ("Action", "CreateInstanceProfile"),
                ("Version", "2010-05-08"),
                ("InstanceProfileName", name),
            ]);
        assert!(response.is_ok(), "iam: {response:?}");
    }

    /// A raw IAM Query API call, bypassing heet entirely.
    pub fn iam(&self, params: &[(&str, &str)]) -> String {
        let (status, body) = call_as(&self.endpoint, &self.key, "iam", params);
        assert!(status < 500, "iam {params:?}: {status} {body}");
        body
    }

    /// The `name_tag` of every member an IAM list call returns whose `Path` starts with
    /// `path` (moto ignores PathPrefix for some lists).
    pub fn iam_names(&self, params: &[(&str, &str)], name_tag: &str, path: &str) -> Vec<String> {
        let mut names: Vec<String> = xml_members(&self.iam(params))
            .into_iter()
            .filter(|m| m.get("Path").is_some_and(|p| p.starts_with(path)))
            .filter_map(|m| m.get(name_tag).cloned())
            .collect();
        names.sort();
        names
    }

    /// Every IAM entity under `/heet/<project>/`, as `kind name`: what must be empty after
    /// `down` (with the look-alikes a test made itself).
    pub fn iam_entities(&self, project: &str) -> Vec<String> {
        let path = format!("/heet/{project}/");
        let mut found = Vec::new();
        for (kind, action, tag) in [
            ("policy", "ListPolicies", "PolicyName"),
            ("group", "ListGroups", "GroupName"),
            ("user", "ListUsers", "UserName"),
            ("role", "ListRoles", "RoleName"),
            (
                "instance-profile",
                "ListInstanceProfiles",
                "InstanceProfileName",
            ),
        ] {
            let mut params = vec![("Action", action)];
            if action == "ListPolicies" {
                params.push(("Scope", "Local"));
            }
            found.extend(
                self.iam_names(&params, tag, &path)
                    .into_iter()
                    .map(|n| format!("{kind} {n}")),
            );
        }
        found
    }

    /// A raw SSM JSON API call, bypassing heet: the status and the body.
    fn ssm(&self, action: &str, body: serde_json::Value) -> (u16, String) {
        let mut response = ureq::post(format!("{}/", self.endpoint))
            .header("X-Amz-Target", format!("AmazonSSM.{action}"))
            .header("Content-Type", "application/x-amz-json-1.1")
            .header("Authorization", self.auth("ssm"))
            .config()
            .http_status_as_error(false)
            .build()
            .send(body.to_string())
            .unwrap();
        let mut text = String::new();
        response
            .body_mut()
            .as_reader()
            .read_to_string(&mut text)
            .unwrap();
        (response.status().as_u16(), text)
    }

    /// Writes an SSM parameter (a String, replacing any), bypassing heet.
    pub fn ssm_put(&self, name: &str, value: &str) {
        let (status, body) = self.ssm(
            "PutParameter",
            serde_json::json!({"Name": name, "Value": value, "Type": "String", "Overwrite": true}),
        );
        assert_eq!(status, 200, "ssm: {body}");
    }

    /// Deletes an SSM parameter by hand, as an operator might.
    pub fn ssm_delete(&self, name: &str) {
        let (status, body) = self.ssm("DeleteParameter", serde_json::json!({ "Name": name }));
        assert_eq!(status, 200, "ssm: {body}");
    }

    /// The keys of `project`/`env`'s ledger (`instance/<slot>`, `record/<name>`,
    /// `resource/<kind>/<name>`), read from its pages as heet stores them.
    pub fn ledger_keys(&self, project: &str, env: &str) -> Vec<String> {
        let mut keys: Vec<String> = self
            .ssm_under(&format!("/heet/{project}/{env}/ledger/"))
            .into_iter()
            .flat_map(|(name, value)| {
                let page = ledger_page(&value).unwrap_or_else(|e| panic!("{name}: {e}: {value}"));
                page.into_iter().map(|(key, _)| key)
            })
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// Every parameter under `path` (recursively) as (name, value), decrypted: what anyone
    /// with access to the account could read there.
    pub fn ssm_under(&self, path: &str) -> Vec<(String, String)> {
        let mut found = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut body =
                serde_json::json!({"Path": path, "Recursive": true, "WithDecryption": true});
            if let Some(t) = &token {
                body["NextToken"] = serde_json::json!(t);
            }
            let (status, text) = self.ssm("GetParametersByPath", body);
            assert_eq!(status, 200, "ssm: {text}");
            let json: serde_json::Value = serde_json::from_str(&text).unwrap();
            for p in json["Parameters"].as_array().unwrap() {
                found.push((
                    p["Name"].as_str().unwrap().to_owned(),
                    p["Value"].as_str().unwrap().to_owned(),
                ));
            }
            match json["NextToken"].as_str() {
                Some(t) if !t.is_empty() => token = Some(t.to_owned()),
                _ => return found,
            }
        }
    }

    /// The value of an SSM parameter, bypassing heet; `None` when there is no such parameter.
    pub fn ssm_parameter(&self, name: &str) -> Option<String> {
        let (status, body) = self.ssm("GetParameter", serde_json::json!({ "Name": name }));
        if status != 200 {
            assert!(body.contains("ParameterNotFound"), "ssm: {body}");
            return None;
        }
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        Some(json["Parameter"]["Value"].as_str().unwrap().to_owned())
    }

    /// A raw Route53 REST call, bypassing heet: `path` under `/2013-04-01/`.
    fn route53(&self, method: &str, path: &str, body: Option<String>) -> String {
        let url = format!("{}/2013-04-01/{path}", self.endpoint);
        let auth = self.auth("route53");
        let response = match body {
            Some(body) => ureq::post(&url).header("Authorization", &auth).send(body),
            None if method == "GET" => ureq::get(&url).header("Authorization", &auth).call(),
            None => panic!("{method} without a body"),
        };
        let mut body = String::new();
        response
            .unwrap()
            .body_mut()
            .as_reader()
            .read_to_string(&mut body)
            .unwrap();
        body
    }

    /// The id of the hosted zone named `domain`, if moto has one.
    pub fn zone_id(&self, domain: &str) -> Option<String> {
        let xml = self.route53("GET", &format!("hostedzonesbyname?dnsname={domain}."), None);
        let doc = roxmltree::Document::parse(&xml).unwrap();
        doc.descendants()
            .filter(|n| n.has_tag_name("HostedZone"))
            .find(|z| child_text(*z, "Name") == format!("{domain}."))
            .map(|z| {
                child_text(z, "Id")
                    .trim_start_matches("/hostedzone/")
                    .to_owned()
            })
    }

    /// Creates a hosted zone, as its owner would by hand; returns its id.
    pub fn create_zone(&self, domain: &str) -> String {
        self.route53(
            "POST",
            "hostedzone",
            Some(format!(
                r#"<?xml version="1.0" encoding="UTF-8"?><CreateHostedZoneRequest xmlns="https://route53.amazonaws.com/doc/2013-04-01/"><Name>{domain}.</Name><CallerReference>test-{domain}</CallerReference></CreateHostedZoneRequest>"#
            )),
        );
        self.zone_id(domain).expect("zone created")
    }

    /// Creates a CNAME in a zone, as someone other than heet would.
    pub fn add_cname(&self, zone: &str, name: &str, target: &str) {
        self.change_cname("CREATE", zone, name, target);
    }

    /// Deletes a CNAME from a zone behind heet's back.
    pub fn delete_cname(&self, zone: &str, name: &str, target: &str) {
        self.change_cname("DELETE", zone, name, target);
    }

    fn change_cname(&self, action: &str, zone: &str, name: &str, target: &str) {
        self.route53(
            "POST",
            &format!("hostedzone/{zone}/rrset"),
            Some(format!(
                r#"<?xml version="1.0" encoding="UTF-8"?><ChangeResourceRecordSetsRequest xmlns="https://route53.amazonaws.com/doc/2013-04-01/"><ChangeBatch><Changes><Change><Action>{action}</Action><ResourceRecordSet><Name>{name}.</Name><Type>CNAME</Type><TTL>300</TTL><ResourceRecords><ResourceRecord><Value>{target}</Value></ResourceRecord></ResourceRecords></ResourceRecordSet></Change></Changes></ChangeBatch></ChangeResourceRecordSetsRequest>"#
            )),
        );
    }

    /// Deletes a (by then empty) zone behind heet's back.
    pub fn delete_zone(&self, zone: &str) {
        let url = format!("{}/2013-04-01/hostedzone/{zone}", self.endpoint);
        ureq::delete(&url)
            .header("Authorization", &self.auth("route53"))
            .call()
            .unwrap();
    }

    /// The CNAMEs of a zone: name (no trailing dot) → target.
    pub fn cnames(&self, zone: &str) -> std::collections::BTreeMap<String, String> {
        self.records_of(zone, "CNAME")
    }

    /// The zone's records of `kind` (`A`, `CNAME`): name → value, without trailing dots.
    pub fn records_of(&self, zone: &str, kind: &str) -> std::collections::BTreeMap<String, String> {
        let mut found = std::collections::BTreeMap::new();
        let mut next = String::new();
        loop {
            let xml = self.route53(
                "GET",
                &format!("hostedzone/{zone}/rrset?maxitems=300{next}"),
                None,
            );
            let doc = roxmltree::Document::parse(&xml).unwrap();
            for r in doc
                .descendants()
                .filter(|n| n.has_tag_name("ResourceRecordSet"))
                .filter(|r| child_text(*r, "Type") == kind)
            {
                let value = r
                    .descendants()
                    .find(|n| n.has_tag_name("Value"))
                    .and_then(|n| n.text())
                    .unwrap_or_default();
                found.insert(
                    child_text(r, "Name").trim_end_matches('.').to_owned(),
                    value.trim_end_matches('.').to_owned(),
                );
            }
            // Every page: moto, like Route53, answers 300 records at most at a time.
            let root = doc.root_element();
            if child_text(root, "IsTruncated") != "true" {
                return found;
            }
            next = format!(
                "&name={}&type={}",
                child_text(root, "NextRecordName"),
                child_text(root, "NextRecordType")
            );
        }
    }

    /// Terminates an instance behind heet's back.
    pub fn terminate(&self, instance_id: &str) {
        self.ec2(&[
            ("Action", "TerminateInstances"),
            ("InstanceId.1", instance_id),
        ]);
    }

    /// Live (not terminated) instances with `tag` = `value`, as moto sees them.
    pub fn live_instances(&self, tag: &str, value: &str) -> Vec<MotoInstance> {
        let key = format!("tag:{tag}");
        let xml = self.ec2(&[
            ("Action", "DescribeInstances"),
            ("Filter.1.Name", &key),
            ("Filter.1.Value.1", value),
            ("Filter.2.Name", "instance-state-name"),
            ("Filter.2.Value.1", "pending"),
            ("Filter.2.Value.2", "running"),
            ("Filter.2.Value.3", "stopping"),
            ("Filter.2.Value.4", "stopped"),
        ]);
        parse_instances(&xml)
    }

    pub fn user_data(&self, instance_id: &str) -> String {
        use base64::Engine as _;
        let xml = self.ec2(&[
            ("Action", "DescribeInstanceAttribute"),
            ("InstanceId", instance_id),
            ("Attribute", "userData"),
        ]);
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let value = doc
            .descendants()
            .find(|n| n.has_tag_name("userData"))
            .and_then(|n| n.children().find(|c| c.has_tag_name("value")))
            .and_then(|n| n.text())
            .unwrap_or_default();
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(value)
                .unwrap(),
        )
        .unwrap()
    }

    /// Launches an instance outside heet with the given tags.
    pub fn launch_foreign(&self, tags: &[(&str, &str)]) -> String {
        let mut params: Vec<(String, String)> = vec![
            ("Action".into(), "RunInstances".into()),
            ("ImageId".into(), "ami-12c6146b".into()),
            ("MinCount".into(), "1".into()),
            ("MaxCount".into(), "1".into()),
        ];
        params.extend(tag_specification("instance", tags));
        let refs: Vec<(&str, &str)> = params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let xml = self.ec2(&refs);
        parse_instances(&xml)
            .pop()
            .expect("RunInstances answered no instance")
            .id
    }
}

/// A security group as moto reports it: id, name, VPC, and its ingress rules as
/// `(port, source)`, the source a CIDR or a group id.
#[derive(Debug, Clone)]
pub struct MotoGroup {
    pub id: String,
    pub name: String,
    pub vpc_id: String,
    pub ingress: Vec<(String, String)>,
}

impl Moto {
    /// The ids (`id_field`) of the items of `set` that `action` lists with these filters,
    /// e.g. `("DescribeVpcs", "vpcSet", "vpcId")`.
    pub fn ids(
        &self,
        (action, set, id_field): (&str, &str, &str),
        filters: &[(&str, &str)],
    ) -> Vec<String> {
        let mut params = vec![("Action".to_owned(), action.to_owned())];
        for (i, (name, value)) in filters.iter().enumerate() {
            params.push((format!("Filter.{}.Name", i + 1), (*name).to_owned()));
            params.push((format!("Filter.{}.Value.1", i + 1), (*value).to_owned()));
        }
        let borrowed: Vec<(&str, &str)> = params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let xml = self.ec2(&borrowed);
        let doc = roxmltree::Document::parse(&xml).unwrap();
        doc.descendants()
            .filter(|n| n.has_tag_name(set))
            .flat_map(|s| s.children().filter(|c| c.has_tag_name("item")))
            .map(|item| child_text(item, id_field))
            .collect()
    }

    /// Every network resource and live instance tagged for `project`, by kind: what must be
    /// empty after `down`.
    pub fn leftovers(&self, project: &str) -> Vec<String> {
        let tag = [("tag:heet:project", project)];
        let mut left = Vec::new();
        for what in [
            ("DescribeVpcs", "vpcSet", "vpcId"),
            ("DescribeSubnets", "subnetSet", "subnetId"),
            (
                "DescribeInternetGateways",
                "internetGatewaySet",
                "internetGatewayId",
            ),
            ("DescribeSecurityGroups", "securityGroupInfo", "groupId"),
            ("DescribeAddresses", "addressesSet", "allocationId"),
            ("DescribeKeyPairs", "keySet", "keyName"),
        ] {
            left.extend(self.ids(what, &tag));
        }
        // Private keys heet keeps, in any environment of the project.
        left.extend(
            self.ssm_under(&format!("/heet/{project}/"))
                .into_iter()
                .map(|(name, _)| name)
                .filter(|name| name.split('/').nth(4) == Some("keys")),
        );
        left.extend(
            self.live_instances("heet:project", project)
                .into_iter()
                .map(|i| i.id),
        );
        // Load balancers and target groups of the project's names.
        for (action, name) in [
            ("DescribeLoadBalancers", "LoadBalancerName"),
            ("DescribeTargetGroups", "TargetGroupName"),
        ] {
            let (_, xml) = call(
                &self.endpoint,
                "elasticloadbalancing",
                &[("Action", action)],
            );
            left.extend(
                xml_members(&xml)
                    .into_iter()
                    .filter_map(|m| m.get(name).cloned())
                    .filter(|n| n.starts_with(&format!("{project}-"))),
            );
        }
        // IAM entities and the access keys kept in config.
        left.extend(self.iam_entities(project));
        left.extend(
            self.ssm_under(&format!("/heet/{project}/"))
                .into_iter()
                .map(|(name, _)| name)
                .filter(|name| {
                    name.split('/')
                        .nth(5)
                        .is_some_and(|k| k.starts_with("IAM_"))
                }),
        );
        left
    }

    /// Every key pair in the region, whoever made it.
    pub fn key_pairs(&self) -> Vec<MotoKey> {
        let xml = self.ec2(&[("Action", "DescribeKeyPairs"), ("IncludePublicKey", "true")]);
        let doc = roxmltree::Document::parse(&xml).unwrap();
        doc.descendants()
            .filter(|n| n.has_tag_name("keySet"))
            .flat_map(|s| s.children().filter(|c| c.has_tag_name("item")))
            .map(|item| MotoKey {
                name: child_text(item, "keyName"),
                key_type: child_text(item, "keyType"),
                public_key: child_text(item, "publicKey"),
                tags: items(item, "tagSet")
                    .into_iter()
                    .map(|t| (child_text(t, "key"), child_text(t, "value")))
                    .collect(),
            })
            .collect()
    }

    /// Makes a key pair with `tags`, as someone other than heet would.
    pub fn create_key_pair(&self, name: &str, tags: &[(&str, &str)]) {
        let mut params = vec![
            ("Action".to_owned(), "CreateKeyPair".to_owned()),
            ("KeyName".to_owned(), name.to_owned()),
            ("KeyType".to_owned(), "ed25519".to_owned()),
        ];
        params.extend(tag_specification("key-pair", tags));
        let borrowed: Vec<(&str, &str)> = params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.ec2(&borrowed);
    }

    /// Security groups tagged `tag` = `value`, with their ingress rules.
    pub fn groups(&self, tag: &str, value: &str) -> Vec<MotoGroup> {
        let xml = self.ec2(&[
            ("Action", "DescribeSecurityGroups"),
            ("Filter.1.Name", &format!("tag:{tag}")),
            ("Filter.1.Value.1", value),
        ]);
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let info = doc
            .descendants()
            .find(|n| n.has_tag_name("securityGroupInfo"))
            .unwrap();
        info.children()
            .filter(|c| c.has_tag_name("item"))
            .map(|g| MotoGroup {
                id: child_text(g, "groupId"),
                name: child_text(g, "groupName"),
                vpc_id: child_text(g, "vpcId"),
                ingress: items(g, "ipPermissions")
                    .into_iter()
                    .flat_map(|p| {
                        let port = format!(
                            "{}/{}",
                            child_text(p, "fromPort"),
                            child_text(p, "ipProtocol")
                        );
                        let mut sources: Vec<(String, String)> = items(p, "ipRanges")
                            .into_iter()
                            .map(|r| (port.clone(), child_text(r, "cidrIp")))
                            .collect();
                        sources.extend(
                            items(p, "groups")
                                .into_iter()
                                .map(|r| (port.clone(), child_text(r, "groupId"))),
                        );
                        sources
                    })
                    .collect(),
            })
            .collect()
    }

    /// The EBS volumes tagged `tag` = `value`: id, size in GiB, whether they go with their
    /// instance, and the instance they are attached to.
    pub fn volumes(&self, tag: &str, value: &str) -> Vec<(String, String, String, String)> {
        let xml = self.ec2(&[
            ("Action", "DescribeVolumes"),
            ("Filter.1.Name", &format!("tag:{tag}")),
            ("Filter.1.Value.1", value),
        ]);
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let Some(set) = doc.descendants().find(|n| n.has_tag_name("volumeSet")) else {
            return Vec::new();
        };
        set.children()
            .filter(|c| c.has_tag_name("item"))
            .map(|v| {
                let id = child_text(v, "volumeId");
                let instance = items(v, "attachmentSet")
                    .into_iter()
                    .next()
                    .map_or_else(String::new, |a| child_text(a, "instanceId"));
                let goes = if instance.is_empty() {
                    String::new()
                } else {
                    self.delete_on_termination(&instance, &id)
                };
                (id, child_text(v, "size"), goes, instance)
            })
            .collect()
    }

    /// Whether `instance_id` deletes its volume `volume_id` when it terminates, from its
    /// block device mapping (moto's DescribeVolumes leaves this out).
    fn delete_on_termination(&self, instance_id: &str, volume_id: &str) -> String {
        let xml = self.ec2(&[
            ("Action", "DescribeInstances"),
            ("InstanceId.1", instance_id),
        ]);
        let doc = roxmltree::Document::parse(&xml).unwrap();
        doc.descendants()
            .filter(|n| n.has_tag_name("ebs"))
            .find(|e| child_text(*e, "volumeId") == volume_id)
            .map_or_else(String::new, |e| child_text(e, "deleteOnTermination"))
    }

    /// The groups, subnet and public IP of an instance, as moto reports them.
    pub fn placement(&self, instance_id: &str) -> (Vec<String>, String, String) {
        let xml = self.ec2(&[
            ("Action", "DescribeInstances"),
            ("InstanceId.1", instance_id),
        ]);
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let item = doc
            .descendants()
            .find(|n| n.has_tag_name("instancesSet"))
            .and_then(|s| s.children().find(|c| c.has_tag_name("item")))
            .unwrap();
        let groups = item
            .children()
            .find(|c| c.has_tag_name("groupSet"))
            .map(|s| {
                s.children()
                    .filter(|c| c.has_tag_name("item"))
                    .map(|g| child_text(g, "groupId"))
                    .collect()
            })
            .unwrap_or_default();
        (
            groups,
            child_text(item, "subnetId"),
            child_text(item, "ipAddress"),
        )
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        // Closing the pipe makes the owning shell kill moto.
        if let Some(child) = &mut self._child {
            drop(child.stdin.take());
            let _ = child.wait();
        }
    }
}

#[derive(Debug, Clone)]
pub struct MotoInstance {
    pub id: String,
    pub state: String,
    pub instance_type: String,
    pub ami: String,
    /// Its public DNS name, "" when it has none (yet).
    pub dns_name: String,
    pub key_name: String,
    pub tags: std::collections::BTreeMap<String, String>,
}

/// A key pair as moto holds it.
#[derive(Debug, Clone)]
pub struct MotoKey {
    pub name: String,
    pub key_type: String,
    /// The OpenSSH public key line.
    pub public_key: String,
    pub tags: std::collections::BTreeMap<String, String>,
}

/// The EC2 Query parameters that tag a resource of `kind` as it is made.
fn tag_specification(kind: &str, tags: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut params = vec![(
        "TagSpecification.1.ResourceType".to_owned(),
        kind.to_owned(),
    )];
    for (i, (k, v)) in tags.iter().enumerate() {
        params.push((
            format!("TagSpecification.1.Tag.{}.Key", i + 1),
            (*k).to_owned(),
        ));
        params.push((
            format!("TagSpecification.1.Tag.{}.Value", i + 1),
            (*v).to_owned(),
        ));
    }
    params
}

/// An Authorization header moto accepts and routes to `service` (moto checks no signature).
pub(crate) fn auth(service: &str) -> String {
    auth_as(DEFAULT_KEY, service)
}

/// The access key of moto's default account (123456789012), as every test's heet gets it.
pub const DEFAULT_KEY: &str = "testing";

fn auth_as(key: &str, service: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential={key}/20260101/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=x"
    )
}

/// The `item` children of `n`'s child `set`.
fn items<'a, 'i>(n: roxmltree::Node<'a, 'i>, set: &str) -> Vec<roxmltree::Node<'a, 'i>> {
    n.children()
        .find(|c| c.has_tag_name(set))
        .map(|s| s.children().filter(|c| c.has_tag_name("item")).collect())
        .unwrap_or_default()
}

/// The text of `n`'s first child element named `name`, or "".
pub fn child_text(n: roxmltree::Node, name: &str) -> String {
    n.children()
        .find(|c| c.has_tag_name(name))
        .and_then(|c| c.text())
        .unwrap_or_default()
        .to_owned()
}

fn parse_instances(xml: &str) -> Vec<MotoInstance> {
    let doc = roxmltree::Document::parse(xml).unwrap();
    doc.descendants()
        .filter(|n| n.has_tag_name("instancesSet"))
        .flat_map(|set| set.children().filter(|c| c.has_tag_name("item")))
        .map(|item| MotoInstance {
            id: child_text(item, "instanceId"),
            state: item
                .children()
                .find(|c| c.has_tag_name("instanceState"))
                .map(|s| child_text(s, "name"))
                .unwrap_or_default(),
            instance_type: child_text(item, "instanceType"),
            ami: child_text(item, "imageId"),
            dns_name: child_text(item, "dnsName"),
            key_name: child_text(item, "keyName"),
            tags: item
                .children()
                .find(|c| c.has_tag_name("tagSet"))
                .map(|set| {
                    set.children()
                        .filter(|c| c.has_tag_name("item"))
                        .map(|t| (child_text(t, "key"), child_text(t, "value")))
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect()
}

/// The instances of `project`, terminated ones included, as an account behind `endpoint`
/// (an AWS model) describes them now; `Err` with the answer when it refused (throttled, say).
pub fn instances_through(endpoint: &str, project: &str) -> Result<Vec<MotoInstance>, String> {
    let (status, xml) = call(
        endpoint,
        "ec2",
        &[
            ("Action", "DescribeInstances"),
            ("Filter.1.Name", "tag:heet:project"),
            ("Filter.1.Value.1", project),
        ],
    );
    if status != 200 {
        return Err(xml);
    }
    Ok(parse_instances(&xml))
}

/// The public DNS name moto gives an instance at `ip` (us-east-1's form).
pub fn public_dns(ip: &str) -> String {
    format!("ec2-{}.compute-1.amazonaws.com", ip.replace('.', "-"))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A heet project in a temporary folder, with a unique project name, and the AWS model its
/// runs go through: an account of its own (its own token buckets) in front of the shared moto.
pub struct Project {
    pub dir: tempfile::TempDir,
    pub name: String,
    pub aws: model::AwsModel,
}

/// The model every suite runs heet through: [`model::Model::quick`], or moto as it is with
/// `HEET_TEST_MODEL=raw` (to tell a model effect from a heet bug).
pub fn suite_model() -> model::Model {
    match std::env::var("HEET_TEST_MODEL").as_deref() {
        Ok("raw") => model::Model::raw(),
        Ok("aws") => model::Model::aws(),
        _ => model::Model::quick(),
    }
}

impl Project {
    /// Writes `heet_toml` (with `{project}` replaced by a unique name) and copies `plugins`
    /// from the built plugin folder into `./plugins`.
    pub fn new(heet_toml: &str, plugins: &[&str]) -> Project {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("t{}-{n}", std::process::id());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("heet.toml"),
            heet_toml.replace("{project}", &name),
        )
        .unwrap();
        let project = Project {
            dir,
            name,
            aws: suite_model().start(&moto().endpoint),
        };
        for p in plugins {
            project.add_plugin(p, p);
        }
        project
    }

    /// Copies the built plugin `built` into `./plugins` as `<name>.wasm`, and pins the plugin
    /// folder in heet.lock as a reviewer would with `heet plugins lock`.
    pub fn add_plugin(&self, built: &str, name: &str) {
        let folder = self.dir.path().join("plugins");
        std::fs::create_dir_all(&folder).unwrap();
        let dir = if OTHER_LANGUAGES.contains(&built) {
            all_plugins_dir()
        } else {
            plugin_dir()
        };
        std::fs::copy(
            dir.join(format!("{built}.wasm")),
            folder.join(format!("{name}.wasm")),
        )
        .unwrap();
        self.lock();
    }

    /// Writes heet.lock for every `*.wasm` in `./plugins`, computed here independently of heet
    /// (the format is documented in docs/plugins.md).
    pub fn lock(&self) {
        let mut lock = String::from("version = 1\n");
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path().join("plugins"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
            .collect();
        files.sort();
        for file in files {
            let sha = sha256_hex(&std::fs::read(&file).unwrap());
            let name = file.file_stem().unwrap().to_str().unwrap();
            lock.push_str(&format!("\n[plugins.{name}]\nsha256 = \"{sha}\"\n"));
        }
        std::fs::write(self.dir.path().join("heet.lock"), lock).unwrap();
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// Writes a file into the project folder, with `{project}` replaced as in [`Project::new`].
    pub fn write(&self, file: &str, contents: &str) {
        std::fs::write(
            self.dir.path().join(file),
            contents.replace("{project}", &self.name),
        )
        .unwrap();
    }

    /// Runs heet in the project's folder against this process's moto server.
    /// The end of a test that converged: another `up` makes no mutating call, and `down`
    /// leaves nothing of the project behind.
    pub fn assert_converged_then_down(&self, env: &str) {
        let again = self.heet(&["up", "--env", env, "--yes", "--output", "json"]);
        assert_eq!(
            again.json()["aws_calls"]["mutating"],
            0,
            "{}",
            again.stderr()
        );
        self.heet(&["down", "--env", env, "--yes"]).ok();
        assert_eq!(moto().leftovers(&self.name), Vec::<String>::new());
    }

    pub fn heet(&self, args: &[&str]) -> Run {
        self.heet_with(args, &[])
    }

    /// As [`Project::heet`], with extra environment variables (which win).
    pub fn heet_with(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        Run(self.command(args, env).output().unwrap())
    }

    /// Runs heet with `input` on its stdin (not a terminal).
    pub fn heet_input(&self, args: &[&str], input: &str) -> Run {
        let mut child = self
            .command(args, &[])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), input.as_bytes()).unwrap();
        Run(child.wait_with_output().unwrap())
    }

    /// Starts heet in the background, as [`Project::heet_with`] would run it.
    pub fn spawn(&self, args: &[&str], env: &[(&str, &str)]) -> Child {
        self.command(args, env)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        command_in(self.dir.path(), &self.aws.endpoint, args, env)
    }

    /// Runs this project's heet through another model from now on (a fresh account's
    /// buckets and windows).
    pub fn use_model(&mut self, model: model::Model) {
        self.aws = model.start(&moto().endpoint);
    }
}

/// heet in `dir` against this process's moto server, with extra environment variables.
fn command_in(dir: &Path, endpoint: &str, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(heet_bin());
    cmd.args(args)
        .current_dir(dir)
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env_remove("AWS_PROFILE")
        // No developer's registry logins: a test that wants one writes its own config.
        .env(
            "DOCKER_CONFIG",
            target_profile_dir().join("heet-test-no-docker-config"),
        )
        .env(
            "HEET_CACHE_DIR",
            target_profile_dir().join("heet-test-cache"),
        )
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    cmd
}

/// Runs heet in `dir` (a definition folder that is not a [`Project`]).
pub fn heet_in(dir: &Path, args: &[&str]) -> Run {
    static MODEL: OnceLock<model::AwsModel> = OnceLock::new();
    let aws = MODEL.get_or_init(|| suite_model().start(&moto().endpoint));
    Run(command_in(dir, &aws.endpoint, args, &[]).output().unwrap())
}

/// The outcome of one heet run.
pub struct Run(pub Output);

impl Run {
    pub fn code(&self) -> i32 {
        self.0.status.code().unwrap_or(-1)
    }
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }
    /// The AWS operations `--stats` reported on stderr (`aws calls: …: ec2:Op×2 …`).
    pub fn operations(&self) -> Vec<String> {
        self.stderr()
            .lines()
            .filter_map(|l| l.strip_prefix("aws calls: "))
            .flat_map(|l| l.split_once("): ").map_or("", |(_, ops)| ops).split(' '))
            .filter_map(|op| op.split_once('×').map(|(name, _)| name.to_owned()))
            .collect()
    }

    /// Asserts success and parses stdout as JSON.
    pub fn json(&self) -> serde_json::Value {
        assert_eq!(
            self.code(),
            0,
            "heet failed:\n{}\n{}",
            self.stdout(),
            self.stderr()
        );
        serde_json::from_str(&self.stdout())
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout()))
    }
    pub fn ok(&self) -> &Run {
        assert_eq!(
            self.code(),
            0,
            "heet failed:\n{}\n{}",
            self.stdout(),
            self.stderr()
        );
        self
    }
}

/// A component made from WIT alone (its functions trap if called): for plugins no Rust code
/// would produce, e.g. one importing WASI or built against another heet WIT. `wit` may use
/// heet's own package (`heet:plugin@<current>`), which is loaded first.
pub fn component_from_wit(wit: &str, world: &str) -> Vec<u8> {
    let mut resolve = wit_parser::Resolve::default();
    resolve
        .push_str(
            "heet.wit",
            &std::fs::read_to_string(repo_root().join("wit/heet.wit")).unwrap(),
        )
        .unwrap();
    let pkg = resolve.push_str("hostile.wit", wit).unwrap();
    let world = resolve.select_world(&[pkg], Some(world)).unwrap();
    let mut module =
        wit_component::dummy_module(&resolve, world, wit_parser::ManglingAndAbi::Standard32);
    wit_component::embed_component_metadata(
        &mut module,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
        false,
    )
    .unwrap();
    wit_component::ComponentEncoder::default()
        .module(&module)
        .unwrap()
        .validate(true)
        .encode()
        .unwrap()
}

/// Debian's `docker-registry` (CNCF distribution), which `cargo xtask setup` installs:
/// `HEET_DOCKER_REGISTRY`, else the one on the PATH.
pub fn docker_registry_command() -> PathBuf {
    std::env::var_os("HEET_DOCKER_REGISTRY")
        .map(PathBuf::from)
        .unwrap_or_else(|| "docker-registry".into())
}

/// A loopback OCI registry of its own, with its storage in a temporary folder, configured
/// here (not by the package's /etc config, which turns on htpasswd auth). It stops when
/// dropped or when this process exits.
pub struct OciRegistry {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    root: tempfile::TempDir,
    _child: Child,
}

/// The login [`OciRegistry::start_with_login`] asks for (test credentials, not a secret; the
/// bcrypt hash in `tests/fixtures/registry.htpasswd` is of this password).
pub const REGISTRY_USER: &str = "heet-test";
pub const REGISTRY_PASSWORD: &str = "not-a-secret";

impl OciRegistry {
    /// A registry anyone on loopback may pull from and push to.
    pub fn start() -> OciRegistry {
        OciRegistry::start_with("")
    }

    /// A registry that asks for HTTP basic auth: [`REGISTRY_USER`] / [`REGISTRY_PASSWORD`].
    pub fn start_with_login() -> OciRegistry {
        let htpasswd = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/registry.htpasswd");
        OciRegistry::start_with(&format!(
            "auth:\n  htpasswd:\n    realm: heet-test\n    path: {}\n",
            htpasswd.display()
        ))
    }

    /// A docker config folder (for `DOCKER_CONFIG`) holding `user:password` for this
    /// registry, as `docker login` writes it.
    pub fn docker_config(&self, user: &str, password: &str) -> tempfile::TempDir {
        use base64::Engine as _;
        let dir = tempfile::tempdir().unwrap();
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        std::fs::write(
            dir.path().join("config.json"),
            serde_json::json!({ "auths": { self.addr.as_str(): { "auth": auth } } }).to_string(),
        )
        .unwrap();
        dir
    }

    fn start_with(auth: &str) -> OciRegistry {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let root = tempfile::tempdir().unwrap();
        let config = root.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{auth}",
                root.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new("sh")
            .arg("-c")
            .arg(r#""$0" serve "$1" >/dev/null 2>&1 & m=$!; read _; kill $m"#)
            .arg(docker_registry_command())
            .arg(&config)
            .stdin(Stdio::piped())
            .spawn()
            .expect("cannot start docker-registry: run `cargo xtask setup`");
        let addr = format!("127.0.0.1:{port}");
        let start = Instant::now();
        // Up once it answers at all: a registry with a login answers 401.
        while matches!(
            ureq::get(format!("http://{addr}/v2/")).call(),
            Err(e) if !matches!(e, ureq::Error::StatusCode(401))
        ) {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "docker-registry did not answer on {addr} within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        OciRegistry {
            addr,
            root,
            _child: child,
        }
    }

    /// `oci://ADDR/REPOSITORY:TAG`.
    pub fn source(&self, repository: &str, tag: &str) -> String {
        format!("oci://{}/{repository}:{tag}", self.addr)
    }

    /// The manifest digest `tag` points at, or `None`.
    pub fn manifest_digest(&self, repository: &str, tag: &str) -> Option<String> {
        let response = ureq::head(format!(
            "http://{}/v2/{repository}/manifests/{tag}",
            self.addr
        ))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .call()
        .ok()?;
        response
            .headers()
            .get("Docker-Content-Digest")
            .map(|v| v.to_str().unwrap().to_owned())
    }

    /// Deletes the manifest `tag` points at (and so the tag).
    pub fn delete_tag(&self, repository: &str, tag: &str) {
        let digest = self.manifest_digest(repository, tag).expect("tag exists");
        ureq::delete(format!(
            "http://{}/v2/{repository}/manifests/{digest}",
            self.addr
        ))
        .call()
        .expect("registry deletes the manifest");
    }

    /// The text of the signature stored beside `manifest`, read with the registry's API.
    pub fn signature(&self, repository: &str, manifest: &str) -> String {
        let tag = format!("{}.sig", manifest.replacen(':', "-", 1));
        let layer = self.layer_digest(repository, &tag);
        let mut blob = ureq::get(format!(
            "http://{}/v2/{repository}/blobs/{layer}",
            self.addr
        ))
        .call()
        .expect("signature blob");
        blob.body_mut().read_to_string().unwrap()
    }

    /// Stores `text` as the signature of the artifact `manifest`, pushed with the registry's
    /// own API (a monolithic blob upload and a manifest), not by heet.
    pub fn put_signature(&self, repository: &str, manifest: &str, text: &str) {
        let config = self.put_blob(repository, b"{}");
        let layer = self.put_blob(repository, text.as_bytes());
        let body = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config, "size": 2},
            "layers": [{
                "mediaType": "application/vnd.heet.plugin.signature.v1+minisign",
                "digest": layer,
                "size": text.len(),
            }],
        });
        let tag = format!("{}.sig", manifest.replacen(':', "-", 1));
        ureq::put(format!(
            "http://{}/v2/{repository}/manifests/{tag}",
            self.addr
        ))
        .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        .send(serde_json::to_vec(&body).unwrap())
        .expect("registry takes the signature manifest");
    }

    fn put_blob(&self, repository: &str, bytes: &[u8]) -> String {
        let digest = format!("sha256:{}", sha256_hex(bytes));
        let started = ureq::post(format!(
            "http://{}/v2/{repository}/blobs/uploads/",
            self.addr
        ))
        .send_empty()
        .expect("upload starts");
        let location = started
            .headers()
            .get("Location")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        let url = if location.starts_with("http") {
            location
        } else {
            format!("http://{}{location}", self.addr)
        };
        let sep = if url.contains('?') { '&' } else { '?' };
        ureq::put(format!("{url}{sep}digest={digest}"))
            .header("Content-Type", "application/octet-stream")
            .send(bytes)
            .expect("blob upload");
        digest
    }

    /// Where the registry keeps the blob `digest` on disk: overwriting it serves other
    /// bytes under the same digest, as a corrupt or malicious registry would.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.root
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// The layer digest of the artifact `tag` points at.
    pub fn layer_digest(&self, repository: &str, tag: &str) -> String {
        let mut response = ureq::get(format!(
            "http://{}/v2/{repository}/manifests/{tag}",
            self.addr
        ))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .call()
        .expect("manifest");
        let body = response.body_mut().read_to_string().unwrap();
        let m: serde_json::Value = serde_json::from_str(&body).unwrap();
        m["layers"][0]["digest"].as_str().unwrap().to_owned()
    }
}
