//! Host-side rules for values that reach AWS, whether written in heet.toml or answered by a
//! plugin: a plugin is never trusted to respect EC2's or DNS's limits.

use crate::namespace::RESERVED_PREFIX;

/// EC2's hard limit on user_data, before base64.
pub const MAX_USER_DATA: usize = 16 * 1024;
/// EC2 allows 50 tags per resource.
pub const MAX_TAGS: usize = 50;
pub const MAX_TAG_KEY: usize = 128;
pub const MAX_TAG_VALUE: usize = 256;

pub fn check_user_data(user_data: &str) -> Result<(), String> {
    if user_data.len() > MAX_USER_DATA {
        return Err(format!(
            "user_data is {} bytes, more than EC2's limit of {MAX_USER_DATA}",
            user_data.len()
        ));
    }
    Ok(())
}

/// An AWS region name: `us-east-1`, `eu-central-2`, `us-gov-west-1`, `ap-southeast-4`.
pub fn check_region(region: &str) -> Result<(), String> {
    let parts: Vec<&str> = region.split('-').collect();
    let ok = parts.len() >= 3
        && parts[0].len() == 2
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase()))
        && parts[parts.len() - 1].parse::<u8>().is_ok_and(|n| n > 0);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{region:?} is not an AWS region (e.g. \"eu-west-1\")"
        ))
    }
}

/// The characters IAM and STS allow in names beside letters and digits: role and session
/// names, external ids (with more).
pub const IAM_NAME_CHARS: &str = "+=,.@_-";

/// An AWS account id: 12 digits.
pub fn is_account_id(id: &str) -> bool {
    id.len() == 12 && id.bytes().all(|b| b.is_ascii_digit())
}

/// The partition, account and resource of an IAM ARN (`arn:aws:iam::111111111111:role/x`),
/// by its shape alone; the parts are for the caller to check.
pub fn iam_arn(arn: &str) -> Option<(&str, &str, &str)> {
    let mut parts = arn.splitn(6, ':');
    match (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) {
        (Some("arn"), Some(partition), Some("iam"), Some(""), Some(account), Some(resource))
            if partition.starts_with("aws") =>
        {
            Some((partition, account, resource))
        }
        _ => None,
    }
}

/// The account an IAM role's ARN names: `arn:<partition>:iam::<12 digits>:role/<path/name>`.
pub fn role_arn_account(arn: &str) -> Result<&str, String> {
    let name_ok = |name: &str| {
        !name.is_empty()
            && name.len() <= 512
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || IAM_NAME_CHARS.contains(c) || c == '/')
    };
    match iam_arn(arn) {
        Some((_, account, resource))
            if is_account_id(account) && resource.strip_prefix("role/").is_some_and(name_ok) =>
        {
            Ok(account)
        }
        _ => Err(format!(
            "{arn:?} is not an IAM role ARN (e.g. \"arn:aws:iam::222222222222:role/heet-deploy\")"
        )),
    }
}

/// STS's rule for a role session name (2 to 64 of `[A-Za-z0-9+=,.@_-]`); for an external id
/// (2 to 1224 of the same and `:/`) with `extra`.
pub fn check_sts_word(what: &str, value: &str, max: usize, extra: &str) -> Result<(), String> {
    let ok = (2..=max).contains(&value.len())
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || IAM_NAME_CHARS.contains(c) || extra.contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} {value:?} must be 2 to {max} letters, digits or any of {IAM_NAME_CHARS}{extra}"
        ))
    }
}

/// `family.size`, e.g. `t3.micro`, `m5.xlarge`, `u-6tb1.metal`.
pub fn check_instance_type(t: &str) -> Result<(), String> {
    let ok = match t.split_once('.') {
        Some((family, size)) => {
            family.starts_with(|c: char| c.is_ascii_lowercase())
                && family
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !size.is_empty()
                && size
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && t.len() <= 32
        }
        None => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid instance type {t:?}: expected family.size such as \"t3.micro\""
        ))
    }
}

/// An availability zone's name as EC2 writes it: `us-east-1a`, `us-gov-west-1b`,
/// `us-west-2-lax-1a` (a Local Zone).
pub fn check_availability_zone(zone: &str) -> Result<(), String> {
    let ok = zone.len() <= 32
        && zone.starts_with(|c: char| c.is_ascii_lowercase())
        && zone.ends_with(|c: char| c.is_ascii_lowercase())
        && zone.contains(|c: char| c.is_ascii_digit())
        && zone
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid availability zone {zone:?}: expected a zone name such as \"us-east-1a\""
        ))
    }
}

/// A placement group's name: 1 to 255 ASCII characters, as EC2 allows.
pub fn check_placement_group(name: &str) -> Result<(), String> {
    if (1..=255).contains(&name.len()) && name.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
        Ok(())
    } else {
        Err(format!(
            "invalid placement group {name:?}: 1 to 255 printable ASCII characters"
        ))
    }
}

pub fn check_ami(ami: &str) -> Result<(), String> {
    let ok = ami.strip_prefix("ami-").is_some_and(|id| {
        !id.is_empty() && id.len() <= 17 && id.chars().all(|c| c.is_ascii_hexdigit())
    });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid ami {ami:?}: expected ami- followed by hex digits"
        ))
    }
}

/// `type base64` of an OpenSSH public key line: the form heet compares keys in, so the same
/// key with another comment (EC2 adds one) is the same key.
pub fn public_key_body(line: &str) -> String {
    line.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// An OpenSSH public key line EC2 can import (ed25519 or RSA), as [`public_key_body`].
pub fn check_public_key(line: &str) -> Result<String, String> {
    use base64::Engine;
    let mut parts = line.split_whitespace();
    let (Some(kind), Some(body)) = (parts.next(), parts.next()) else {
        return Err(
            "invalid public_key: expected an OpenSSH public key, `ssh-ed25519 AAAA… comment`"
                .into(),
        );
    };
    if !["ssh-ed25519", "ssh-rsa"].contains(&kind) {
        return Err(format!(
            "invalid public_key: EC2 imports ssh-ed25519 and ssh-rsa keys, not {kind:?}"
        ));
    }
    // The key blob starts with its own type, length-prefixed: a body from another key type
    // or a truncated paste is caught here, not by EC2 halfway through `up`.
    let blob = base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|e| format!("invalid public_key: the key is not base64 ({e})"))?;
    let named = blob
        .get(..4)
        .map(|n| u32::from_be_bytes([n[0], n[1], n[2], n[3]]) as usize)
        .and_then(|n| blob.get(4..4 + n));
    if named != Some(kind.as_bytes()) {
        return Err(format!(
            "invalid public_key: the key's data is not a {kind} key"
        ));
    }
    Ok(public_key_body(line))
}

/// A DNS name: labels of 1..=63 letters, digits and inner hyphens, 253 characters in all.
pub fn check_dns_name(name: &str) -> Result<(), String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > 253 {
        return Err(format!(
            "invalid DNS name {name:?}: must be 1 to 253 characters"
        ));
    }
    for label in name.split('.') {
        check_dns_label(label).map_err(|why| format!("invalid DNS name {name:?}: {why}"))?;
    }
    Ok(())
}

fn check_dns_label(label: &str) -> Result<(), String> {
    if label.is_empty() || label.len() > 63 {
        return Err(format!("label {label:?} must be 1 to 63 characters"));
    }
    if !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(format!(
            "label {label:?} may hold only letters, digits and '-'"
        ));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(format!("label {label:?} must not start or end with '-'"));
    }
    Ok(())
}

/// A tag a plugin asks for: EC2's limits, and no key in AWS's or heet's reserved space.
pub fn check_tag(key: &str, value: &str) -> Result<(), String> {
    if key.is_empty() || key.chars().count() > MAX_TAG_KEY {
        return Err(format!(
            "tag key {key:?} must be 1 to {MAX_TAG_KEY} characters"
        ));
    }
    if value.chars().count() > MAX_TAG_VALUE {
        return Err(format!(
            "value of tag {key:?} is longer than {MAX_TAG_VALUE} characters"
        ));
    }
    if key.to_ascii_lowercase().starts_with("aws:") {
        return Err(format!(
            "tag key {key:?}: the aws: prefix is reserved by AWS"
        ));
    }
    if key.starts_with(RESERVED_PREFIX) {
        return Err(format!(
            "tag key {key:?}: the {RESERVED_PREFIX} prefix is reserved by heet"
        ));
    }
    let allowed = |c: char| c.is_alphanumeric() || " _.:/=+-@".contains(c);
    if let Some(c) = key.chars().chain(value.chars()).find(|c| !allowed(*c)) {
        return Err(format!(
            "tag {key:?}: character {c:?} is not allowed in EC2 tags"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_role_arns_and_session_names_are_checked_as_aws_does() {
        for ok in [
            "us-east-1",
            "eu-central-2",
            "us-gov-west-1",
            "ap-southeast-4",
        ] {
            assert_eq!(check_region(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "us-east",
            "useast1",
            "US-EAST-1",
            "us-east-0",
            "u-east-1",
        ] {
            assert!(check_region(bad).is_err(), "{bad}");
        }
        assert_eq!(
            role_arn_account("arn:aws:iam::222222222222:role/ops/heet-deploy"),
            Ok("222222222222")
        );
        assert_eq!(
            role_arn_account("arn:aws-cn:iam::111111111111:role/d"),
            Ok("111111111111")
        );
        for bad in [
            "arn:aws:iam::22222222222:role/d",
            "arn:aws:iam::222222222222:user/d",
            "arn:aws:iam::222222222222:role/",
            "arn:aws:sts::222222222222:role/d",
            "222222222222",
        ] {
            assert!(role_arn_account(bad).is_err(), "{bad}");
        }
        assert_eq!(check_sts_word("session_name", "heet-alice", 64, ""), Ok(()));
        assert!(check_sts_word("session_name", "a", 64, "").is_err());
        assert!(check_sts_word("session_name", "has space", 64, "").is_err());
        assert_eq!(check_sts_word("external_id", "org:1/x", 1224, ":/"), Ok(()));
    }

    #[test]
    fn public_keys_are_checked_and_lose_their_comment() {
        let key =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHe21njEm5jyACCSs2x886LlE5CtVJDr3kiT8Yx3kmbo";
        assert_eq!(
            check_public_key(&format!("{key} ops@example")),
            Ok(key.into())
        );
        assert_eq!(check_public_key(&format!("  {key}\n")), Ok(key.into()));
        let body = key.split(' ').nth(1).unwrap();
        for (bad, says) in [
            ("", "expected an OpenSSH public key"),
            ("ssh-ed25519", "expected an OpenSSH public key"),
            (
                &*format!("ecdsa-sha2-nistp256 {body}"),
                "not \"ecdsa-sha2-nistp256\"",
            ),
            (&*format!("ssh-rsa {body}"), "not a ssh-rsa key"),
            ("ssh-ed25519 AAAA!!", "not base64"),
            ("ssh-ed25519 AAAAC3NzaC1lZDI1", "not a ssh-ed25519 key"),
        ] {
            let err = check_public_key(bad).unwrap_err();
            assert!(err.contains(says), "{bad:?}: {err}");
        }
    }

    #[test]
    fn instance_types() {
        for ok in ["t3.micro", "m5.xlarge", "u-6tb1.metal", "c7gn.16xlarge"] {
            assert!(check_instance_type(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "t3",
            ".micro",
            "t3.",
            "T3.micro",
            "t3.micro large",
            "t3.mi;cro",
        ] {
            assert!(check_instance_type(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn amis() {
        assert!(check_ami("ami-12c6146b").is_ok());
        for bad in ["ami-", "12c6146b", "ami-xyz", "ami-123456789012345678"] {
            assert!(check_ami(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dns_names() {
        assert!(check_dns_name("demo.example.com").is_ok());
        assert!(check_dns_name("production-www-01.example.com.").is_ok());
        assert!(
            check_dns_name("a_b.example.com")
                .unwrap_err()
                .contains("only letters")
        );
        assert!(
            check_dns_name("-a.example.com")
                .unwrap_err()
                .contains("start or end")
        );
        assert!(check_dns_name("a..b").unwrap_err().contains("1 to 63"));
        assert!(
            check_dns_name(&"a".repeat(64))
                .unwrap_err()
                .contains("1 to 63")
        );
    }

    #[test]
    fn tags() {
        assert!(check_tag("cost-center", "web/42").is_ok());
        assert!(
            check_tag("aws:cloudformation", "x")
                .unwrap_err()
                .contains("reserved by AWS")
        );
        assert!(
            check_tag("AWS:x", "x")
                .unwrap_err()
                .contains("reserved by AWS")
        );
        assert!(
            check_tag("heet:id", "x")
                .unwrap_err()
                .contains("reserved by heet")
        );
        assert!(check_tag(&"k".repeat(129), "x").is_err());
        assert!(check_tag("k", &"v".repeat(257)).is_err());
        assert!(check_tag("", "v").is_err());
        assert!(check_tag("k", "a\nb").unwrap_err().contains("not allowed"));
    }

    #[test]
    fn user_data_limit() {
        assert!(check_user_data(&"x".repeat(MAX_USER_DATA)).is_ok());
        assert!(check_user_data(&"x".repeat(MAX_USER_DATA + 1)).is_err());
    }

    // Fuzzing by property: whatever a plugin answers, the checks never panic, and what they
    // accept is what EC2 and Route53 accept. `PROPTEST_CASES=100000 cargo test -p heet
    // validate::tests::prop` runs longer campaigns (docs/cli.md).
    mod prop {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn an_accepted_dns_name_has_valid_labels(name in "\\PC{0,300}|[a-z0-9.-]{0,300}") {
                if check_dns_name(&name).is_ok() {
                    let name = name.strip_suffix('.').unwrap_or(&name);
                    prop_assert!(!name.is_empty() && name.len() <= 253);
                    for label in name.split('.') {
                        prop_assert!((1..=63).contains(&label.len()), "{label}");
                        prop_assert!(label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
                        prop_assert!(!label.starts_with('-') && !label.ends_with('-'));
                    }
                }
            }

            #[test]
            fn an_accepted_tag_is_within_ec2s_limits(key in "\\PC{0,140}", value in "\\PC{0,270}") {
                if check_tag(&key, &value).is_ok() {
                    prop_assert!((1..=MAX_TAG_KEY).contains(&key.chars().count()));
                    prop_assert!(value.chars().count() <= MAX_TAG_VALUE);
                    prop_assert!(!key.to_ascii_lowercase().starts_with("aws:"));
                    prop_assert!(!key.starts_with(RESERVED_PREFIX));
                }
            }

            #[test]
            fn an_accepted_role_arn_names_its_account(arn in "\\PC{0,80}") {
                if let Ok(account) = role_arn_account(&arn) {
                    prop_assert!(arn.starts_with("arn:aws") && arn.contains(":role/"));
                    prop_assert!(account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()));
                }
            }

            #[test]
            fn instance_types_and_amis_never_panic(t in "\\PC{0,40}", ami in "\\PC{0,40}") {
                if check_instance_type(&t).is_ok() {
                    prop_assert!(t.contains('.') && !t.contains(char::is_whitespace));
                }
                if check_ami(&ami).is_ok() {
                    prop_assert!(ami.starts_with("ami-"));
                }
            }
        }
    }
}
