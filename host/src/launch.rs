//! An instance's launch settings one by one (`heet:settings`) and a role's `replace_on`: the
//! settings whose change replaces a running instance. Pure.
//!
//! `heet:spec` hashes every setting at once: equal, the instance is as the definition asks.
//! When it differs, `heet:settings` (one short hash per setting) says which settings do. A
//! change of a setting `replace_on` leaves out is for instances launched from then on: the
//! running ones keep what they were launched with, and their tags keep saying so. A hash per
//! setting, rather than a spec over only the `replace_on` ones, is what lets `replace_on`
//! itself change without replacing anything.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use toml::Spanned;

use crate::definition::DefinitionError;
use crate::namespace;

/// One launch setting, named as `replace_on` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Setting {
    Ami,
    InstanceType,
    UserData,
    /// The key pair launched with: `key_name`, or the one heet makes (`key_pair`).
    KeyName,
    /// `subnet_id`, or the subnet heet makes.
    Subnet,
    /// `security_group_ids` and the role's heet group.
    SecurityGroups,
    /// `volume_gb` and `volume_keep`.
    Volume,
    InstanceProfile,
    /// `availability_zone`, `placement_group` and `tenancy`.
    Placement,
    EbsOptimized,
    /// `disable_api_termination`: changed in place, never a reason to replace.
    ApiTermination,
}

impl Setting {
    pub const ALL: [Setting; 11] = [
        Setting::Ami,
        Setting::InstanceType,
        Setting::UserData,
        Setting::KeyName,
        Setting::Subnet,
        Setting::SecurityGroups,
        Setting::Volume,
        Setting::InstanceProfile,
        Setting::Placement,
        Setting::EbsOptimized,
        Setting::ApiTermination,
    ];

    /// Whether EC2 changes it on a running instance: a change of it is made in place, and
    /// `replace_on` cannot name it.
    pub fn in_place(self) -> bool {
        match self {
            Setting::ApiTermination => true,
            Setting::Ami
            | Setting::InstanceType
            | Setting::UserData
            | Setting::KeyName
            | Setting::Subnet
            | Setting::SecurityGroups
            | Setting::Volume
            | Setting::InstanceProfile
            | Setting::Placement
            | Setting::EbsOptimized => false,
        }
    }

    /// The settings whose change may replace an instance: what `replace_on` may name.
    pub fn replaceable() -> impl Iterator<Item = Setting> {
        Setting::ALL.into_iter().filter(|s| !s.in_place())
    }

    pub fn name(self) -> &'static str {
        match self {
            Setting::Ami => "ami",
            Setting::InstanceType => "instance_type",
            Setting::UserData => "user_data",
            Setting::KeyName => "key_name",
            Setting::Subnet => "subnet",
            Setting::SecurityGroups => "security_groups",
            Setting::Volume => "volume",
            Setting::InstanceProfile => "instance_profile",
            Setting::Placement => "placement",
            Setting::EbsOptimized => "ebs_optimized",
            Setting::ApiTermination => "disable_api_termination",
        }
    }

    pub fn parse(name: &str) -> Option<Setting> {
        Setting::ALL.into_iter().find(|s| s.name() == name)
    }
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Joins settings for messages: `user_data, key_name`.
pub fn names(settings: &[Setting]) -> String {
    settings
        .iter()
        .map(|s| s.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The settings whose change replaces a running instance; every one unless the role says
/// (those changed in place never do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplaceOn(BTreeSet<Setting>);

impl Default for ReplaceOn {
    fn default() -> ReplaceOn {
        ReplaceOn(Setting::replaceable().collect())
    }
}

impl ReplaceOn {
    pub fn of(settings: impl IntoIterator<Item = Setting>) -> ReplaceOn {
        ReplaceOn(settings.into_iter().collect())
    }

    pub fn contains(&self, s: Setting) -> bool {
        self.0.contains(&s)
    }

    /// Every setting: a change of any replaces the instance (the default).
    pub fn is_all(&self) -> bool {
        self.0.len() == Setting::replaceable().count()
    }

    /// The settings it leaves out, for the plan and docs.
    pub fn left_out(&self) -> Vec<Setting> {
        Setting::replaceable()
            .filter(|s| !self.0.contains(s))
            .collect()
    }

    /// A role's `replace_on`, its own or the defaults'. `error` makes a definition error at
    /// a byte offset of the file.
    pub fn build(
        role: &str,
        own: Option<&Spanned<Vec<Spanned<String>>>>,
        defaults: Option<&Spanned<Vec<Spanned<String>>>>,
        error: &dyn Fn(usize, String) -> DefinitionError,
    ) -> Result<ReplaceOn, DefinitionError> {
        let Some(list) = own.or(defaults) else {
            return Ok(ReplaceOn::default());
        };
        let mut settings = BTreeSet::new();
        for name in list.get_ref() {
            let setting = Setting::parse(name.get_ref()).ok_or_else(|| {
                let known: Vec<&str> = Setting::replaceable().map(|s| s.name()).collect();
                error(
                    name.span().start,
                    format!(
                        "roles.{role}.replace_on: {:?} is not a launch setting; they are {}",
                        name.get_ref(),
                        known.join(", ")
                    ),
                )
            })?;
            if setting.in_place() {
                return Err(error(
                    name.span().start,
                    format!(
                        "roles.{role}.replace_on: {:?} is changed in place, it never replaces an instance",
                        name.get_ref()
                    ),
                ));
            }
            if !settings.insert(setting) {
                return Err(error(
                    name.span().start,
                    format!("roles.{role}.replace_on names {:?} twice", name.get_ref()),
                ));
            }
        }
        Ok(ReplaceOn(settings))
    }
}

/// What an instance is launched with, one short hash per setting that is set. A setting not
/// set has no entry, so one added in a later release leaves the tag of instances that do not
/// use it as it was.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings(BTreeMap<Setting, String>);

/// Hex digits kept of each setting's hash: the tag holds every setting within AWS's 256
/// characters of a tag value.
const HASH_LEN: usize = 8;

impl Settings {
    pub fn new<'a>(values: impl IntoIterator<Item = (Setting, &'a str)>) -> Settings {
        Settings(
            values
                .into_iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(s, v)| {
                    let mut hash = namespace::spec_hash(&[s.name(), v]);
                    hash.truncate(HASH_LEN);
                    (s, hash)
                })
                .collect(),
        )
    }

    /// The `heet:settings` tag value: `ami.1a2b3c4d-instance_type.…`. Only characters no
    /// encoding escapes: a request's signature is computed over its encoded form, and an
    /// endpoint that re-encodes a space or `=` its own way (moto's IAM authorization does)
    /// no longer agrees with it.
    pub fn tag(&self) -> String {
        self.0
            .iter()
            .map(|(s, h)| format!("{}.{h}", s.name()))
            .collect::<Vec<_>>()
            .join("-")
    }

    /// Reads a `heet:settings` tag; `None` when it is not one heet wrote.
    pub fn from_tag(tag: &str) -> Option<Settings> {
        let mut settings = BTreeMap::new();
        for part in tag.split('-').filter(|p| !p.is_empty()) {
            let (name, hash) = part.split_once('.')?;
            let ok = hash.len() == HASH_LEN && hash.bytes().all(|b| b.is_ascii_hexdigit());
            if !ok
                || settings
                    .insert(Setting::parse(name)?, hash.to_owned())
                    .is_some()
            {
                return None;
            }
        }
        Some(Settings(settings))
    }

    /// Whether `setting` is set to `value`.
    pub fn holds(&self, setting: Setting, value: &str) -> bool {
        self.0.get(&setting) == Settings::new([(setting, value)]).0.get(&setting)
    }

    /// `self` with `settings` as `wanted` has them: what an instance runs once they are
    /// changed in place.
    pub fn with(&self, wanted: &Settings, settings: &[Setting]) -> Settings {
        let mut merged = self.0.clone();
        for s in settings {
            match wanted.0.get(s) {
                Some(h) => merged.insert(*s, h.clone()),
                None => merged.remove(s),
            };
        }
        Settings(merged)
    }

    /// The settings in which `self` and `other` differ, in `Setting::ALL`'s order.
    pub fn differing(&self, other: &Settings) -> Vec<Setting> {
        Setting::ALL
            .into_iter()
            .filter(|s| self.0.get(s) != other.0.get(s))
            .collect()
    }
}

/// How a running instance fits the settings its slot wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fit {
    /// Launched with every setting as wanted.
    Exact,
    /// Differs only in settings `replace_on` leaves out: it stays as it was launched.
    AsLaunched(Vec<Setting>),
    /// Stays, with `modify` changed in place and `as_launched` left as launched.
    Modify {
        modify: Vec<Setting>,
        as_launched: Vec<Setting>,
    },
    /// To be replaced; the settings that differ, when its tags say (empty when they do not).
    Replace(Vec<Setting>),
}

impl Fit {
    /// Whether the instance stays in its slot.
    pub fn stays(&self) -> bool {
        !matches!(self, Fit::Replace(_))
    }
}

/// How an instance tagged `spec` and `settings` fits a slot that wants `wanted_spec` and
/// `wanted`. An instance without a readable `heet:settings` (launched before it existed, or
/// re-tagged by hand) fits only when its spec is the wanted one.
pub fn fit(
    wanted_spec: &str,
    wanted: &Settings,
    replace_on: &ReplaceOn,
    spec: Option<&str>,
    settings: Option<&str>,
) -> Fit {
    if spec == Some(wanted_spec) {
        return Fit::Exact;
    }
    let Some(has) = settings.and_then(Settings::from_tag) else {
        return Fit::Replace(Vec::new());
    };
    let differing = has.differing(wanted);
    let (modify, rest): (Vec<Setting>, Vec<Setting>) = differing.iter().partition(|s| s.in_place());
    if differing.is_empty() {
        // Every setting as wanted, only the spec differs (one from another release): nothing
        // it runs differs, and its spec tag may say so.
        Fit::Exact
    } else if rest.iter().any(|s| replace_on.contains(*s)) {
        Fit::Replace(differing)
    } else if modify.is_empty() {
        Fit::AsLaunched(rest)
    } else {
        Fit::Modify {
            modify,
            as_launched: rest,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(user_data: &str, ami: &str) -> Settings {
        Settings::new([
            (Setting::Ami, ami),
            (Setting::InstanceType, "t3.micro"),
            (Setting::UserData, user_data),
            (Setting::KeyName, ""),
        ])
    }

    #[test]
    fn the_tag_reads_back_and_fits_in_a_tag_value() {
        let all = Settings::new(Setting::ALL.map(|s| (s, "some value")));
        let tag = all.tag();
        assert!(tag.len() <= 256, "{} characters: {tag}", tag.len());
        assert_eq!(Settings::from_tag(&tag), Some(all));
        // Unset settings have no entry.
        let some = settings("#!/bin/sh", "ami-1");
        assert_eq!(
            some.tag()
                .split('-')
                .map(|p| &p[..p.find('.').unwrap()])
                .collect::<Vec<_>>(),
            ["ami", "instance_type", "user_data"]
        );
        assert!(
            tag.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)),
            "only characters no encoding escapes: {tag}"
        );
        for bad in [
            "ami",
            "ami.12",
            "ami.zzzzzzzz",
            "colour.12345678",
            "ami.12345678-ami.12345678",
        ] {
            assert_eq!(Settings::from_tag(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_change_outside_replace_on_keeps_the_instance_as_launched() {
        let launched = settings("v1", "ami-1");
        let keep_user_data = ReplaceOn::of([Setting::Ami, Setting::InstanceType]);
        let tag = launched.tag();
        let fits = |wanted: &Settings, on: &ReplaceOn| {
            fit("new-spec", wanted, on, Some("old-spec"), Some(&tag))
        };
        assert_eq!(
            fits(&settings("v2", "ami-1"), &keep_user_data),
            Fit::AsLaunched(vec![Setting::UserData])
        );
        // The default replaces on every setting, naming the one that changed.
        assert_eq!(
            fits(&settings("v2", "ami-1"), &ReplaceOn::default()),
            Fit::Replace(vec![Setting::UserData])
        );
        // A setting replace_on lists replaces it, whatever else changed along.
        assert_eq!(
            fits(&settings("v2", "ami-2"), &keep_user_data),
            Fit::Replace(vec![Setting::Ami, Setting::UserData])
        );
        // The same spec fits whatever the settings tag says.
        assert_eq!(
            fit(
                "s",
                &settings("v2", "ami-2"),
                &keep_user_data,
                Some("s"),
                None
            ),
            Fit::Exact
        );
    }

    #[test]
    fn a_setting_ec2_changes_in_place_is_modified_never_a_reason_to_replace() {
        let protected = |on: bool| {
            Settings::new([
                (Setting::Ami, "ami-1"),
                (Setting::UserData, "v1"),
                (Setting::ApiTermination, if on { "true" } else { "" }),
            ])
        };
        let tag = protected(true).tag();
        assert!(protected(true).holds(Setting::ApiTermination, "true"));
        assert!(!protected(false).holds(Setting::ApiTermination, "true"));
        let every = ReplaceOn::default();
        assert!(!every.contains(Setting::ApiTermination), "never replaces");
        assert_eq!(
            fit("new", &protected(false), &every, Some("old"), Some(&tag)),
            Fit::Modify {
                modify: vec![Setting::ApiTermination],
                as_launched: vec![]
            }
        );
        // Along with a change replace_on leaves out: both stay, the tag says what changed.
        let mut wanted = protected(false);
        wanted.0.insert(Setting::UserData, "00000000".into());
        let on = ReplaceOn::of([Setting::Ami]);
        assert_eq!(
            fit("new", &wanted, &on, Some("old"), Some(&tag)),
            Fit::Modify {
                modify: vec![Setting::ApiTermination],
                as_launched: vec![Setting::UserData]
            }
        );
        let merged = protected(true).with(&wanted, &[Setting::ApiTermination]);
        assert_eq!(
            merged,
            protected(false),
            "user_data as launched, protection as wanted"
        );
        // Along with one it lists: replaced.
        assert_eq!(
            fit("new", &wanted, &every, Some("old"), Some(&tag)),
            Fit::Replace(vec![Setting::UserData, Setting::ApiTermination])
        );
    }

    #[test]
    fn without_a_settings_tag_only_the_spec_decides() {
        let wanted = settings("v2", "ami-1");
        let on = ReplaceOn::of([Setting::Ami]);
        assert_eq!(
            fit("new", &wanted, &on, Some("old"), None),
            Fit::Replace(vec![])
        );
        assert_eq!(
            fit("new", &wanted, &on, Some("old"), Some("not=ours")),
            Fit::Replace(vec![])
        );
        assert_eq!(fit("new", &wanted, &on, None, None), Fit::Replace(vec![]));
    }

    #[test]
    fn replace_on_is_checked_where_it_is_written() {
        let error = |at: usize, message: String| DefinitionError {
            file: "heet.toml".into(),
            at: Some((1, at)),
            message,
        };
        let list = |names: &[&str]| {
            Spanned::new(
                0..1,
                names
                    .iter()
                    .enumerate()
                    .map(|(i, n)| Spanned::new(i * 10..i * 10 + 1, n.to_string()))
                    .collect::<Vec<_>>(),
            )
        };
        let own = list(&["ami", "instance_type"]);
        let on = ReplaceOn::build("www", Some(&own), None, &error).unwrap();
        assert_eq!(
            on.left_out(),
            [
                Setting::UserData,
                Setting::KeyName,
                Setting::Subnet,
                Setting::SecurityGroups,
                Setting::Volume,
                Setting::InstanceProfile,
                Setting::Placement,
                Setting::EbsOptimized
            ]
        );
        // The role's own list wins over the defaults'; neither is every setting.
        let defaults = list(&["ami"]);
        assert_eq!(
            ReplaceOn::build("www", Some(&own), Some(&defaults), &error).unwrap(),
            on
        );
        assert!(
            ReplaceOn::build("www", None, None, &error)
                .unwrap()
                .is_all()
        );
        let e =
            ReplaceOn::build("www", Some(&list(&["ami", "userdata"])), None, &error).unwrap_err();
        assert_eq!(e.at, Some((1, 10)));
        assert!(
            e.message.contains(
                "\"userdata\" is not a launch setting; they are ami, instance_type, user_data"
            ),
            "{}",
            e.message
        );
        let e = ReplaceOn::build("www", Some(&list(&["ami", "ami"])), None, &error).unwrap_err();
        assert!(e.message.contains("names \"ami\" twice"), "{}", e.message);
    }
}
