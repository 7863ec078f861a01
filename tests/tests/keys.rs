//! Key pairs heet makes per role against moto, through the AWS model: made with the private
//! key kept as a secret that nothing prints but `keys get --reveal`, imported from a public
//! key, repaired after drift, converging after a kill between the key pair and its secret,
//! and deleted exactly by `down`, look-alikes untouched.

use base64::Engine;
use tests::{MotoKey, Project, Run, moto};

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHe21njEm5jyACCSs2x886LlE5CtVJDr3kiT8Yx3kmbo";
const OTHER_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILSiCGR8ABQGkLIJ1dJ+3jZpJebjmHJH8TZtapRqgPRM";

fn def(db_key: &str) -> String {
    format!(
        r#"
[project]
name = "{{project}}"

[defaults]
ami = "ami-12c6146b"
key_pair = "create"

[roles.www]
count = 2

[roles.db]
key_pair = {{ public_key = "{db_key} ops@laptop" }}

[roles.worker]
key_name = "theirs"

[environments.staging]
"#
    )
}

fn keys_of(p: &Project) -> Vec<MotoKey> {
    let mut keys: Vec<MotoKey> = moto()
        .key_pairs()
        .into_iter()
        .filter(|k| k.name.starts_with(&format!("{}-", p.name)))
        .collect();
    keys.sort_by(|a, b| a.name.cmp(&b.name));
    keys
}

fn key<'a>(keys: &'a [MotoKey], name: &str) -> &'a MotoKey {
    keys.iter()
        .find(|k| k.name == name)
        .unwrap_or_else(|| panic!("no key pair {name} in {keys:?}"))
}

/// The private keys heet keeps for `p`'s staging, by parameter name, read around heet.
fn private_keys(p: &Project) -> Vec<(String, String)> {
    moto().ssm_under(&format!("/heet/{}/staging/keys/", p.name))
}

/// Whether the OpenSSH private key `private` holds the public key of `public` (the format
/// carries the public key blob in the clear).
fn holds(private: &str, public: &str) -> bool {
    let b64 = base64::engine::general_purpose::STANDARD;
    let body: String = private
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let private = b64.decode(body).unwrap();
    let public = b64.decode(public.split(' ').nth(1).unwrap()).unwrap();
    private.windows(public.len()).any(|w| w == public)
}

fn all_output(run: &Run) -> String {
    format!("{}{}", run.stdout(), run.stderr())
}

#[test]
fn made_and_imported_key_pairs_launch_their_roles_and_only_reveal_prints_a_private_key() {
    let p = Project::new(&def(KEY), &[]);
    let www = format!("{}-staging-www", p.name);
    let db = format!("{}-staging-db", p.name);
    // Look-alikes: heet's tags for another env, and this env's tags with an id heet did not
    // derive. Neither is heet's to replace or delete.
    moto().create_key_pair(
        &format!("{}-production-www", p.name),
        &[
            ("heet:project", &p.name),
            ("heet:env", "production"),
            ("heet:resource", "key/www"),
        ],
    );
    moto().create_key_pair(
        &format!("{}-staging-api", p.name),
        &[
            ("heet:project", &p.name),
            ("heet:env", "staging"),
            ("heet:resource", "key/www"),
            ("heet:id", "not-derived-by-heet"),
        ],
    );

    let plan = p
        .heet(&["plan", "--env", "staging", "--output", "json"])
        .ok()
        .json();
    let creates: Vec<&serde_json::Value> = plan["plan"]["network"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["action"] == "create-key")
        .collect();
    assert_eq!(creates.len(), 2, "{}", plan["plan"]);

    let up = p.heet(&["up", "--env", "staging", "-vv", "--output", "json"]);
    up.ok();
    let keys = keys_of(&p);
    assert_eq!(key(&keys, &www).key_type, "ed25519");
    assert_eq!(key(&keys, &www).tags["heet:resource"], "key/www");
    assert!(key(&keys, &db).public_key.starts_with(KEY), "{keys:?}");
    for i in moto().live_instances("heet:project", &p.name) {
        let want = match i.tags["heet:role"].as_str() {
            "www" => www.clone(),
            "db" => db.clone(),
            _ => "theirs".to_owned(),
        };
        assert_eq!(i.key_name, want, "{}", i.tags["heet:role"]);
    }

    // www's private key is kept, and is the key of www's key pair; db's is the operator's.
    let kept = private_keys(&p);
    assert_eq!(
        kept.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        [format!("/heet/{}/staging/keys/www", p.name)]
    );
    let private = kept[0].1.clone();
    assert!(
        private.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"),
        "a private key"
    );
    assert!(holds(&private, &key(&keys, &www).public_key));
    // Not a line of it in up's output, logs at trace level included, nor in the ledger.
    let secret_line = private.lines().nth(2).unwrap();
    assert!(!all_output(&up).contains(secret_line));
    let ledger = moto().ssm_under(&format!("/heet/{}/staging/ledger/", p.name));
    assert!(ledger.iter().all(|(_, v)| !v.contains(secret_line)));
    assert!(
        moto()
            .ledger_keys(&p.name, "staging")
            .contains(&"resource/key/www".to_owned())
    );

    let told = p.heet(&["keys", "get", "www", "--env", "staging"]);
    told.ok();
    assert!(
        told.stdout()
            .contains(&format!("/heet/{}/staging/keys/www", p.name))
    );
    assert!(!all_output(&told).contains(secret_line));
    let revealed = p.heet(&["keys", "get", "www", "--env", "staging", "--reveal"]);
    revealed.ok();
    assert_eq!(revealed.stdout().trim_end(), private.trim_end());
    let imported = p.heet(&["keys", "get", "db", "--env", "staging"]);
    assert_eq!(imported.code(), 2, "{}", imported.stderr());
    assert!(
        imported
            .stderr()
            .contains("heet keeps no private key for role db")
    );
    for run in [
        p.heet(&["status", "--env", "staging", "-vv"]),
        p.heet(&["plan", "--env", "staging", "--output", "json"]),
    ] {
        assert!(!all_output(&run).contains(secret_line));
    }

    let again = p
        .heet(&["up", "--env", "staging", "--output", "json"])
        .ok()
        .json();
    assert_eq!(again["aws_calls"]["mutating"], 0, "{}", again["plan"]);

    // Drift: www's private key deleted by hand (the key pair is of no use without it), and
    // db's key changed in the definition. Both are replaced under their names; no instance
    // is (a key is only read at launch).
    moto().ssm_delete(&format!("/heet/{}/staging/keys/www", p.name));
    p.write("heet.toml", &def(OTHER_KEY).replace("{project}", &p.name));
    let status = p.heet(&["status", "--env", "staging"]);
    assert_eq!(status.code(), 2, "{}", status.stdout());
    assert!(
        status.stdout().contains("- key/www") && status.stdout().contains("+ key pair"),
        "{}",
        status.stdout()
    );
    let before: Vec<String> = moto()
        .live_instances("heet:project", &p.name)
        .into_iter()
        .map(|i| i.id)
        .collect();
    p.heet(&["up", "--env", "staging"]).ok();
    let keys = keys_of(&p);
    assert!(
        key(&keys, &db).public_key.starts_with(OTHER_KEY),
        "{keys:?}"
    );
    let kept = private_keys(&p);
    assert_eq!(kept.len(), 1);
    assert_ne!(kept[0].1, private, "a new private key");
    assert!(holds(&kept[0].1, &key(&keys, &www).public_key));
    let after: Vec<String> = moto()
        .live_instances("heet:project", &p.name)
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(before, after);
    let again = p
        .heet(&["up", "--env", "staging", "--output", "json"])
        .ok()
        .json();
    assert_eq!(again["aws_calls"]["mutating"], 0, "{}", again["plan"]);

    p.heet(&["down", "--env", "staging", "--yes"]).ok();
    assert_eq!(moto().leftovers(&p.name).len(), 2, "the look-alikes only");
    let left: Vec<String> = keys_of(&p).into_iter().map(|k| k.name).collect();
    assert_eq!(
        left,
        [
            format!("{}-production-www", p.name),
            format!("{}-staging-api", p.name)
        ]
    );
    assert!(moto().ledger_keys(&p.name, "staging").is_empty());
}

/// Runs `up` after a killed run: two key pairs, no twin, the one private key kept is www's,
/// and the next `up` makes no mutating call.
fn up_converges(p: &Project, www: &str) {
    p.heet(&["up", "--env", "staging"]).ok();
    let keys = keys_of(p);
    assert_eq!(keys.len(), 2, "no twins: {keys:?}");
    let kept = private_keys(p);
    assert_eq!(kept.len(), 1);
    assert!(holds(&kept[0].1, &key(&keys, www).public_key));
    let again = p
        .heet(&["up", "--env", "staging", "--output", "json"])
        .ok()
        .json();
    assert_eq!(again["aws_calls"]["mutating"], 0, "{}", again["plan"]);
}

#[test]
fn a_run_killed_between_a_key_pair_and_its_secret_converges_on_the_next_up() {
    let p = Project::new(&def(KEY), &[]);
    let www = format!("{}-staging-www", p.name);
    // db's key is imported and www's made at once (one tier): the run is killed as soon as
    // CreateKeyPair answers, before www's private key is kept; db's import may or may not
    // have happened by then, and either way the next run must converge.
    let killed = p.heet_with(
        &["up", "--env", "staging"],
        &[("HEET_TEST_ABORT_AFTER_OP", "ec2:CreateKeyPair")],
    );
    assert!(killed.stderr().contains("aborting"), "{}", killed.stderr());
    // The kill left www's key pair without its private key; nothing launched yet.
    assert!(moto().live_instances("heet:project", &p.name).is_empty());
    let plan = p.heet(&["plan", "--env", "staging"]);
    plan.ok();
    assert!(
        plan.stdout()
            .contains(&format!("- key/www {www} (to be replaced)")),
        "{}",
        plan.stdout()
    );

    up_converges(&p, &www);

    // A key pair deleted by hand leaves its private key behind: `down` deletes that too.
    moto().ec2(&[("Action", "DeleteKeyPair"), ("KeyName", &www)]);
    p.heet(&["down", "--env", "staging", "--yes"]).ok();
    assert_eq!(moto().leftovers(&p.name), Vec::<String>::new());
    assert!(moto().ledger_keys(&p.name, "staging").is_empty());

    // Killed as soon as db's import answers, its entry still written ahead (www's key pair,
    // made in the same tier, may or may not be made by then): the next run converges too.
    let killed = p.heet_with(
        &["up", "--env", "staging"],
        &[("HEET_TEST_ABORT_AFTER_OP", "ec2:ImportKeyPair")],
    );
    assert!(killed.stderr().contains("aborting"), "{}", killed.stderr());
    up_converges(&p, &www);
    p.heet(&["down", "--env", "staging", "--yes"]).ok();
    assert_eq!(moto().leftovers(&p.name), Vec::<String>::new());
    assert!(moto().ledger_keys(&p.name, "staging").is_empty());
}
