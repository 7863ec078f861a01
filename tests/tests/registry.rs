//! Plugins across orgs through a real OCI registry (Debian's docker-registry on loopback):
//! one project publishes signed components (naming in Rust, the guard in JavaScript), another
//! adds them under a trust policy and plans with them; a re-pushed tag, a tampered or foreign
//! signature, a key outside its scope, an unsigned artifact, a registry that is down and a
//! corrupt blob are each caught, with nothing written; a registry that asks for a login gets
//! the docker config's credentials.

use tests::{OciRegistry, Project, REGISTRY_PASSWORD, REGISTRY_USER, all_plugins_dir, sha256_hex};

const BASE: &str = r#"
[project]
name = "{project}"

[defaults]
ami = "ami-12c6146b"

[roles.www]
count = 1

[environments.staging]
"#;

/// A project that only publishes: its definition is never read by `keygen` or `publish`.
fn publisher() -> Project {
    Project::new(BASE, &[])
}

/// Makes the key pair `name` in `p`'s folder; returns its id and public key line.
fn keygen(p: &Project, name: &str) -> (String, String) {
    let made = p
        .heet(&["plugins", "keygen", "--out", name, "--output", "json"])
        .json();
    (
        made["key_id"].as_str().unwrap().to_owned(),
        made["public_key"].as_str().unwrap().to_owned(),
    )
}

fn publish(p: &Project, built: &str, target: &str, key: &str) -> serde_json::Value {
    let file = all_plugins_dir().join(format!("{built}.wasm"));
    p.heet(&[
        "plugins",
        "publish",
        file.to_str().unwrap(),
        target,
        "--key",
        key,
        "--output",
        "json",
    ])
    .json()
}

fn trusting(public_key: &str, scope: &str) -> String {
    format!("{BASE}\n[[plugins.trust.keys]]\npublic_key = \"{public_key}\"\nscope = \"{scope}\"\n")
}

fn built(name: &str) -> Vec<u8> {
    std::fs::read(all_plugins_dir().join(format!("{name}.wasm"))).unwrap()
}

fn lock_of(p: &Project) -> toml::Table {
    toml::from_str(&std::fs::read_to_string(p.path("heet.lock")).unwrap()).unwrap()
}

/// What a refused `add` must leave: no plugin file, no lock.
fn assert_nothing_written(p: &Project, name: &str) {
    let plugins = p.path("plugins");
    let left: Vec<String> = std::fs::read_dir(&plugins)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "{name}: the plugin folder holds {left:?}");
    assert!(!p.path("heet.lock").exists(), "{name}: a lock was written");
}

#[test]
fn plugins_published_signed_are_added_under_a_trust_policy_pinned_and_planned_with() {
    let registry = OciRegistry::start();
    let acme = publisher();
    // A password-protected key signs only with its password.
    let made = acme
        .heet_input(
            &[
                "plugins",
                "keygen",
                "--out",
                "acme",
                "--password-stdin",
                "--output",
                "json",
            ],
            "correct horse\n",
        )
        .json();
    let (key_id, public_key) = (
        made["key_id"].as_str().unwrap().to_owned(),
        made["public_key"].as_str().unwrap().to_owned(),
    );
    assert_eq!(made["encrypted"], true);
    let naming = registry.source("acme/naming", "1.0.0");
    let naming_wasm = all_plugins_dir().join("naming.wasm");
    let without = acme.heet(&[
        "plugins",
        "publish",
        naming_wasm.to_str().unwrap(),
        &naming,
        "--key",
        "acme.key",
    ]);
    assert_eq!(without.code(), 1, "{}", without.stderr());
    assert!(
        without.stderr().contains("password-protected"),
        "{}",
        without.stderr()
    );
    for (built_name, target) in [
        ("naming", naming.clone()),
        // The guard is the JavaScript one: a component is a component, whatever its language.
        ("guard-js", registry.source("acme/guard", "1.0.0")),
    ] {
        let file = all_plugins_dir().join(format!("{built_name}.wasm"));
        let published = acme
            .heet_input(
                &[
                    "plugins",
                    "publish",
                    file.to_str().unwrap(),
                    &target,
                    "--key",
                    "acme.key",
                    "--password-stdin",
                    "--output",
                    "json",
                ],
                "correct horse\n",
            )
            .json();
        assert_eq!(published["signer"], key_id.as_str());
        assert_eq!(published["sha256"], sha256_hex(&built(built_name)));
    }

    let shop = Project::new(
        &trusting(&public_key, "acme/*").replace(
            "[defaults]",
            "[plugins.config.naming]\npattern = \"{env}-{role}-acme{index}\"\n\n[defaults]",
        ),
        &[],
    );
    let added = shop
        .heet(&["plugins", "add", &naming, "--output", "json"])
        .json();
    assert_eq!(added["signer"], key_id.as_str());
    assert_eq!(added["hooks"], serde_json::json!(["configure", "naming"]));
    assert_eq!(
        added["proposed_grant"],
        "[plugins.grants.naming]\nhooks = [\"naming\"]"
    );
    let guard = registry.source("acme/guard", "1.0.0");
    let text = shop.heet(&["plugins", "add", &guard, "--as", "policy", "--grant"]);
    assert!(
        text.ok().stdout().contains(&format!("signed by {key_id}")),
        "{}",
        text.stdout()
    );

    assert!(
        text.stdout()
            .contains("granted in heet.toml:\n[plugins.grants.policy]\nhooks = [\"guard\"]"),
        "{}",
        text.stdout()
    );
    let toml = std::fs::read_to_string(shop.path("heet.toml")).unwrap();
    assert!(
        toml.starts_with("\n[project]")
            && toml.ends_with("[plugins.grants.policy]\nhooks = [\"guard\"]\n"),
        "the definition is kept and the grant appended: {toml}"
    );
    let listed = shop.heet(&["plugins", "list"]);
    assert!(
        listed.ok().stdout().contains("grant: guard roles=* envs=*"),
        "{}",
        listed.stdout()
    );
    assert_eq!(
        std::fs::read(shop.path("plugins/naming.wasm")).unwrap(),
        built("naming")
    );
    let lock = lock_of(&shop);
    let entry = &lock["plugins"]["naming"];
    assert_eq!(entry["source"].as_str(), Some(naming.as_str()));
    assert_eq!(
        entry["sha256"].as_str().unwrap(),
        sha256_hex(&built("naming"))
    );
    assert_eq!(
        entry["manifest"].as_str(),
        registry.manifest_digest("acme/naming", "1.0.0").as_deref()
    );
    assert_eq!(entry["signer"].as_str(), Some(key_id.as_str()));
    assert!(entry["signature"].as_str().unwrap().contains("heet-plugin"));
    assert_eq!(
        lock["plugins"]["policy"]["signer"].as_str(),
        Some(key_id.as_str())
    );

    // plan runs the added plugins, from the folder, offline: the registry is gone.
    drop(registry);
    let plan = shop
        .heet(&["plan", "--env", "staging", "--output", "json"])
        .json();
    assert_eq!(plan["plan"]["changes"][0]["name"], "staging-www-acme1");

    // A lock whose stored signature was edited is refused before any plugin runs.
    let lock_text = std::fs::read_to_string(shop.path("heet.lock")).unwrap();
    let signature = entry["signature"].as_str().unwrap();
    let edited = tampered(signature);
    std::fs::write(
        shop.path("heet.lock"),
        toml_edited(&lock_text, "naming", signature, &edited),
    )
    .unwrap();
    let refused = shop.heet(&["plan", "--env", "staging"]);
    assert_eq!(refused.code(), 2, "{}", refused.stderr());
    assert!(
        refused
            .stderr()
            .contains("plugins.trust refuses 1 plugin(s)")
            && refused.stderr().contains("plugin naming:")
            && refused
                .stderr()
                .contains(&format!("its signature by {key_id} does not verify")),
        "{}",
        refused.stderr()
    );
}

/// A minisign signature with one character of its signature line changed.
fn tampered(signature: &str) -> String {
    let mut lines: Vec<String> = signature.lines().map(str::to_owned).collect();
    let flipped = if lines[1].as_bytes()[40] == b'A' {
        "B"
    } else {
        "A"
    };
    lines[1].replace_range(40..41, flipped);
    lines.join("\n")
}

/// The lock with `naming`'s signature replaced, as TOML writes it.
fn toml_edited(lock: &str, plugin: &str, old: &str, new: &str) -> String {
    let mut table: toml::Table = toml::from_str(lock).unwrap();
    let entry = table["plugins"][plugin].as_table_mut().unwrap();
    assert_eq!(entry["signature"].as_str(), Some(old));
    entry.insert("signature".into(), toml::Value::String(new.into()));
    toml::to_string(&table).unwrap()
}

#[test]
fn a_re_pushed_tag_is_shown_by_update_and_written_only_when_confirmed() {
    let registry = OciRegistry::start();
    let acme = publisher();
    let (_, public_key) = keygen(&acme, "acme");
    let naming = registry.source("acme/naming", "1.0.0");
    publish(&acme, "naming", &naming, "acme.key");
    let shop = Project::new(&trusting(&public_key, "acme/*"), &[]);
    shop.heet(&["plugins", "add", &naming]).ok();
    let pinned = std::fs::read_to_string(shop.path("heet.lock")).unwrap();
    let up_to_date = shop.heet(&["plugins", "update"]);
    assert!(
        up_to_date
            .ok()
            .stdout()
            .contains("plugins up to date: naming"),
        "{}",
        up_to_date.stdout()
    );

    // The same tag, other (signed) bytes.
    publish(&acme, "chain", &naming, "acme.key");
    let (old, new) = (sha256_hex(&built("naming")), sha256_hex(&built("chain")));
    let asked = shop.heet(&["plugins", "update"]);
    assert_eq!(asked.code(), 2, "{}", asked.stderr());
    assert!(
        asked
            .stderr()
            .contains(&format!("sha256 {} -> {}", &old[..12], &new[..12]))
            && asked.stderr().contains("refusing without --yes"),
        "{}",
        asked.stderr()
    );
    assert_eq!(
        std::fs::read_to_string(shop.path("heet.lock")).unwrap(),
        pinned
    );
    assert_eq!(
        std::fs::read(shop.path("plugins/naming.wasm")).unwrap(),
        built("naming")
    );
    // Until it is updated, plan runs the pinned bytes.
    shop.heet(&["plan", "--env", "staging"]).ok();

    let updated = shop
        .heet(&["plugins", "update", "naming", "--yes", "--output", "json"])
        .json();
    assert_eq!(updated["updated"][0]["new_sha256"], new.as_str());
    assert_eq!(
        lock_of(&shop)["plugins"]["naming"]["sha256"].as_str(),
        Some(new.as_str())
    );
    assert_eq!(
        std::fs::read(shop.path("plugins/naming.wasm")).unwrap(),
        built("chain")
    );

    let removed = shop.heet(&["plugins", "remove", "naming"]);
    assert!(removed.ok().stdout().contains("dropped from heet.lock"));
    assert!(!shop.path("plugins/naming.wasm").exists());
    assert!(
        lock_of(&shop)["plugins"]
            .as_table()
            .is_none_or(|t| t.is_empty())
    );
}

#[test]
fn what_the_trust_policy_or_the_registry_refuses_is_never_written() {
    let registry = OciRegistry::start();
    let acme = publisher();
    let (acme_id, public_key) = keygen(&acme, "acme");
    let (mallory_id, _) = keygen(&acme, "mallory");
    let refused = |p: &Project, source: &str, code: i32, says: &[&str], case: &str| {
        let run = p.heet(&["plugins", "add", source, "--as", "naming"]);
        assert_eq!(run.code(), code, "{case}: {}", run.stderr());
        for s in says {
            assert!(
                run.stderr().contains(s),
                "{case}: {s:?} in {}",
                run.stderr()
            );
        }
        assert_nothing_written(p, case);
    };

    // A key trusted for another namespace.
    let naming = registry.source("acme/naming", "1.0.0");
    publish(&acme, "naming", &naming, "acme.key");
    let elsewhere = Project::new(&trusting(&public_key, "globex/*"), &[]);
    refused(
        &elsewhere,
        &naming,
        2,
        &[
            "plugin naming:",
            &format!("its signer {acme_id} is trusted only for \"globex/*\""),
            "not for acme/naming",
        ],
        "out of scope",
    );

    // A grant already written for the name that does not allow what the plugin exports.
    let granted = Project::new(
        &format!(
            "{}\n[plugins.grants.naming]\nhooks = [\"guard\"]\n",
            trusting(&public_key, "acme/*")
        ),
        &[],
    );
    refused(
        &granted,
        &naming,
        2,
        &["plugins.grants.naming (hooks = [\"guard\"]) does not allow naming"],
        "grant that does not fit",
    );

    let shop = Project::new(&trusting(&public_key, "acme/*"), &[]);
    // A key the policy does not know.
    let foreign = registry.source("acme/naming", "2.0.0");
    publish(&acme, "naming", &foreign, "mallory.key");
    refused(
        &shop,
        &foreign,
        2,
        &[&format!(
            "its signer {mallory_id} is not a key of plugins.trust"
        )],
        "unknown signer",
    );

    // The signature of one artifact stored beside another.
    let guard = registry.source("acme/guard", "1.0.0");
    publish(&acme, "guard", &guard, "acme.key");
    let guard_manifest = registry.manifest_digest("acme/guard", "1.0.0").unwrap();
    let copied = registry.source("acme/guard", "1.0.1");
    publish(&acme, "tags", &copied, "acme.key");
    let tags_manifest = registry.manifest_digest("acme/guard", "1.0.1").unwrap();
    registry.put_signature(
        "acme/guard",
        &tags_manifest,
        &registry.signature("acme/guard", &guard_manifest),
    );
    refused(
        &shop,
        &copied,
        2,
        &[&format!("its signature by {acme_id} does not verify")],
        "copied signature",
    );

    // The same bytes under another version, carrying the first version's signature: it
    // verifies over the bytes, but it was given for 1.0.0.
    let again = registry.source("acme/naming", "1.0.4");
    publish(&acme, "naming", &again, "acme.key");
    let first = registry.manifest_digest("acme/naming", "1.0.0").unwrap();
    let second = registry.manifest_digest("acme/naming", "1.0.4").unwrap();
    assert_ne!(first, second, "each version is a manifest of its own");
    registry.put_signature(
        "acme/naming",
        &second,
        &registry.signature("acme/naming", &first),
    );
    refused(
        &shop,
        &again,
        2,
        &[
            &format!("its signature by {acme_id} is for acme/naming:1.0.0 (sha256 "),
            "not for acme/naming:1.0.4",
        ],
        "another version's signature",
    );

    // A signature with one character changed.
    let edited = registry.source("acme/naming", "1.0.2");
    publish(&acme, "naming", &edited, "acme.key");
    let manifest = registry.manifest_digest("acme/naming", "1.0.2").unwrap();
    let good = registry.signature("acme/naming", &manifest);
    registry.put_signature("acme/naming", &manifest, &tampered(&good));
    refused(
        &shop,
        &edited,
        2,
        &["plugins.trust refuses", "does not verify"],
        "tampered signature",
    );

    // No signature at all.
    let unsigned = registry.source("acme/naming", "1.0.3");
    publish(&acme, "naming", &unsigned, "acme.key");
    let manifest = registry.manifest_digest("acme/naming", "1.0.3").unwrap();
    registry.delete_tag(
        "acme/naming",
        &format!("{}.sig", manifest.replacen(':', "-", 1)),
    );
    refused(&shop, &unsigned, 2, &["it is not signed"], "unsigned");

    // Bytes that are not the ones the manifest names.
    let corrupt = registry.source("acme/sizing", "1.0.0");
    publish(&acme, "sizing", &corrupt, "acme.key");
    let blob = registry.blob_file(&registry.layer_digest("acme/sizing", "1.0.0"));
    let mut bytes = std::fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&blob, bytes).unwrap();
    refused(
        &shop,
        &corrupt,
        1,
        &["the layer's bytes do not match its digest"],
        "digest mismatch",
    );

    // A registry that is down: a loopback port nothing listens on.
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    drop(registry);
    refused(
        &shop,
        &format!("oci://{addr}/acme/naming:1.0.0"),
        1,
        &["cannot reach the registry"],
        "registry down",
    );

    // And a trust policy refuses a plugin that was never added from a registry.
    shop.add_plugin("naming", "naming");
    let plan = shop.heet(&["plan", "--env", "staging"]);
    assert_eq!(plan.code(), 2, "{}", plan.stderr());
    assert!(
        plan.stderr()
            .contains("plugin naming: it is not signed: it was not added from a registry"),
        "{}",
        plan.stderr()
    );
}

#[test]
fn a_registry_that_asks_for_a_login_gets_the_docker_configs_credentials() {
    let registry = OciRegistry::start_with_login();
    let acme = publisher();
    let (key_id, public_key) = keygen(&acme, "acme");
    let target = registry.source("acme/naming", "1.0.0");
    let file = all_plugins_dir().join("naming.wasm");
    let publish_args = [
        "plugins",
        "publish",
        file.to_str().unwrap(),
        &target,
        "--key",
        "acme.key",
        "--output",
        "json",
    ];
    let config_of = |dir: &tempfile::TempDir| dir.path().to_str().unwrap().to_owned();

    let anonymous = acme.heet(&publish_args);
    assert_eq!(anonymous.code(), 1, "{}", anonymous.stderr());
    assert!(
        anonymous.stderr().contains(&format!(
            "the registry refused access anonymously (the docker config has no credentials for {})",
            registry.addr
        )) && anonymous
            .stderr()
            .contains(&format!("log in with `docker login {}`", registry.addr)),
        "{}",
        anonymous.stderr()
    );

    let wrong = registry.docker_config(REGISTRY_USER, "wrong-password");
    let refused = acme.heet_with(&publish_args, &[("DOCKER_CONFIG", &config_of(&wrong))]);
    assert_eq!(refused.code(), 1, "{}", refused.stderr());
    assert!(
        refused.stderr().contains(&format!(
            "refused access as user {REGISTRY_USER} (from the docker config)"
        )),
        "{}",
        refused.stderr()
    );
    assert!(
        !refused.stderr().contains("wrong-password")
            && !refused.stdout().contains("wrong-password"),
        "a password is never printed: {}",
        refused.stderr()
    );

    let login = registry.docker_config(REGISTRY_USER, REGISTRY_PASSWORD);
    let docker = [("DOCKER_CONFIG", config_of(&login))];
    let docker: Vec<(&str, &str)> = docker.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let published = acme.heet_with(&publish_args, &docker).json();
    assert_eq!(published["signer"], key_id.as_str());

    let shop = Project::new(&trusting(&public_key, "acme/*"), &[]);
    let anonymous_add = shop.heet(&["plugins", "add", &target]);
    assert_eq!(anonymous_add.code(), 1, "{}", anonymous_add.stderr());
    assert!(
        anonymous_add
            .stderr()
            .contains("refused access anonymously"),
        "{}",
        anonymous_add.stderr()
    );
    assert_nothing_written(&shop, "an add the registry refused");
    let added = shop
        .heet_with(&["plugins", "add", &target, "--output", "json"], &docker)
        .json();
    assert_eq!(added["signer"], key_id.as_str());
    let lock = lock_of(&shop);
    assert_eq!(
        lock["plugins"]["naming"]["sha256"].as_str().unwrap(),
        sha256_hex(&built("naming"))
    );
    assert!(
        !std::fs::read_to_string(shop.path("heet.lock"))
            .unwrap()
            .contains(REGISTRY_PASSWORD),
        "the lock holds no credential"
    );
    // plan needs no login: it reads the folder. The name is the added plugin's (heet's own
    // would start with the project's).
    drop(registry);
    let plan = shop
        .heet(&["plan", "--env", "staging", "--output", "json"])
        .json();
    assert_eq!(plan["plan"]["changes"][0]["name"], "staging-www-01");
}
