//! IAM: heet's policies, groups, users (and their access keys), roles and instance
//! profiles, observed under the environment's path and changed as `kinds::iam` plans. An
//! access key's secret passes from IAM's answer straight into a SecureString.

use std::collections::BTreeMap;

use aws_sdk_iam::error::ProvideErrorMetadata;
use aws_sdk_iam::types::{PolicyScopeType, Tag};
use futures::future::try_join_all;

use super::{FRESH_ID_WAIT, Ssm, retry_while, sdk_error};
use crate::kinds::iam::{
    self as kind, Holder, Kind, Observed, ObservedDetail, ObservedIam, Version,
};

/// IAM, as heet uses it.
#[derive(Clone)]
pub struct Iam {
    client: aws_sdk_iam::Client,
    ssm: Ssm,
}

/// What a create made: IAM's unique id and the ARN.
pub struct Made {
    pub id: String,
    pub arn: String,
}

fn tags(tags: &BTreeMap<String, String>) -> Vec<Tag> {
    tags.iter()
        .filter_map(|(k, v)| Tag::builder().key(k).value(v).build().ok())
        .collect()
}

/// Every item of the paginated IAM list `request`, across its pages.
macro_rules! every {
    ($request:expr) => {
        $request.into_paginator().items().send().try_collect().await
    };
}

/// Whether IAM refused because the entity is not there (yet: IAM is eventually consistent
/// right after a create; or any more: a delete found it gone).
fn no_such<E: ProvideErrorMetadata>(e: &E) -> bool {
    e.code() == Some("NoSuchEntity")
}

/// An `Ok` for calls that undo something already undone.
fn gone<T, E>(label: &str, r: Result<T, E>) -> anyhow::Result<()>
where
    E: super::AwsError,
{
    match r {
        Ok(_) => Ok(()),
        Err(e) if no_such(&e) => Ok(()),
        Err(e) => Err(sdk_error(label, e)),
    }
}

impl Iam {
    pub fn new(client: aws_sdk_iam::Client, ssm: Ssm) -> Iam {
        Iam { client, ssm }
    }

    /// Everything under heet's path for `project`/`env`, with what each holds, and the
    /// access key ids kept in the environment's config.
    pub async fn observe(
        &self,
        project: &str,
        env: &str,
        managed: &std::collections::BTreeSet<String>,
    ) -> anyhow::Result<ObservedIam> {
        let path = kind::path(project, env);
        let c = &self.client;
        let policies = async {
            every!(
                c.list_policies()
                    .scope(PolicyScopeType::Local)
                    .path_prefix(&path)
            )
            .map_err(|e| sdk_error("iam:ListPolicies", e))
        };
        let groups = async {
            every!(c.list_groups().path_prefix(&path)).map_err(|e| sdk_error("iam:ListGroups", e))
        };
        let users = async {
            every!(c.list_users().path_prefix(&path)).map_err(|e| sdk_error("iam:ListUsers", e))
        };
        let roles = async {
            every!(c.list_roles().path_prefix(&path)).map_err(|e| sdk_error("iam:ListRoles", e))
        };
        let profiles = async {
            every!(c.list_instance_profiles().path_prefix(&path))
                .map_err(|e| sdk_error("iam:ListInstanceProfiles", e))
        };
        let config_path = crate::ops::config_path(project, env);
        let config = self.ssm.list(&config_path);
        // A policy the definition names by ARN must exist before anything is made for it.
        let missing = try_join_all(managed.iter().map(|arn| async move {
            match c.get_policy().policy_arn(arn).send().await {
                Ok(_) => Ok(None),
                Err(e) if no_such(&e) => Ok(Some(arn.clone())),
                Err(e) => Err(sdk_error(&format!("iam:GetPolicy {arn}"), e)),
            }
        }));
        let (policies, groups, users, roles, profiles, config, missing) =
            tokio::try_join!(policies, groups, users, roles, profiles, config, missing)?;

        // IAM filters by prefix (emulators may not filter at all): only heet's exact path.
        let policies = policies
            .into_iter()
            .filter(|p| p.path() == Some(path.as_str()))
            .map(|p| async move {
                let arn = p.arn().unwrap_or_default().to_owned();
                let versions = every!(c.list_policy_versions().policy_arn(&arn))
                    .map_err(|e| sdk_error("iam:ListPolicyVersions", e))?;
                let default = p.default_version_id().unwrap_or("v1");
                let document = c
                    .get_policy_version()
                    .policy_arn(&arn)
                    .version_id(default)
                    .send()
                    .await
                    .map_err(|e| sdk_error("iam:GetPolicyVersion", e))?
                    .policy_version()
                    .and_then(|v| v.document())
                    .and_then(kind::parse_document);
                anyhow::Ok(Observed {
                    kind: Kind::Policy,
                    name: p.policy_name().unwrap_or_default().to_owned(),
                    id: p.policy_id().unwrap_or_default().to_owned(),
                    arn,
                    detail: ObservedDetail::Policy {
                        document,
                        versions: versions
                            .iter()
                            .map(|v| Version {
                                id: v.version_id().unwrap_or_default().to_owned(),
                                default: v.is_default_version(),
                            })
                            .collect(),
                    },
                })
            });
        let groups = groups
            .into_iter()
            .filter(|g| g.path() == path)
            .map(|g| async move {
                let name = g.group_name().to_owned();
                let (members, attached) = tokio::try_join!(
                    async {
                        every!(c.get_group().group_name(&name))
                            .map_err(|e| sdk_error("iam:GetGroup", e))
                    },
                    self.attached(Holder::Group(name.clone())),
                )?;
                anyhow::Ok(Observed {
                    kind: Kind::Group,
                    id: g.group_id().to_owned(),
                    arn: g.arn().to_owned(),
                    detail: ObservedDetail::Group {
                        attached,
                        members: members.iter().map(|u| u.user_name().to_owned()).collect(),
                    },
                    name,
                })
            });
        let users = users
            .into_iter()
            .filter(|u| u.path() == path)
            .map(|u| async move {
                let name = u.user_name().to_owned();
                let (groups, attached, keys) = tokio::try_join!(
                    async {
                        every!(c.list_groups_for_user().user_name(&name))
                            .map_err(|e| sdk_error("iam:ListGroupsForUser", e))
                    },
                    self.attached(Holder::User(name.clone())),
                    self.keys(&name),
                )?;
                anyhow::Ok(Observed {
                    kind: Kind::User,
                    id: u.user_id().to_owned(),
                    arn: u.arn().to_owned(),
                    detail: ObservedDetail::User {
                        groups: groups.iter().map(|g| g.group_name().to_owned()).collect(),
                        attached,
                        keys,
                    },
                    name,
                })
            });
        let roles = roles
            .into_iter()
            .filter(|r| r.path() == path)
            .map(|r| async move {
                let name = r.role_name().to_owned();
                let attached = self.attached(Holder::Role(name.clone())).await?;
                anyhow::Ok(Observed {
                    kind: Kind::Role,
                    id: r.role_id().to_owned(),
                    arn: r.arn().to_owned(),
                    detail: ObservedDetail::Role {
                        trust: r
                            .assume_role_policy_document()
                            .and_then(kind::parse_document),
                        attached,
                    },
                    name,
                })
            });
        let (policies, groups, users, roles) = tokio::try_join!(
            try_join_all(policies),
            try_join_all(groups),
            try_join_all(users),
            try_join_all(roles),
        )?;
        let mut entities: Vec<Observed> = policies;
        entities.extend(groups);
        entities.extend(users);
        entities.extend(roles);
        entities.extend(
            profiles
                .iter()
                .filter(|p| p.path() == path)
                .map(|p| Observed {
                    kind: Kind::Profile,
                    name: p.instance_profile_name().to_owned(),
                    id: p.instance_profile_id().to_owned(),
                    arn: p.arn().to_owned(),
                    detail: ObservedDetail::Profile {
                        roles: p.roles().iter().map(|r| r.role_name().to_owned()).collect(),
                    },
                }),
        );

        let values: BTreeMap<&str, &str> = config
            .iter()
            .filter_map(|(n, v)| Some((n.strip_prefix(&config_path)?, v.as_str())))
            .collect();
        let prefix = format!("{project}-{env}-");
        let stored_keys = entities
            .iter()
            .filter(|o| o.kind == Kind::User)
            .filter_map(|o| {
                let short = o.name.strip_prefix(&prefix)?;
                let (id_key, _) = kind::access_key_keys(short);
                Some((o.name.clone(), (*values.get(id_key.as_str())?).to_owned()))
            })
            .collect();
        Ok(ObservedIam {
            entities,
            missing: missing.into_iter().flatten().collect(),
            stored_keys,
        })
    }

    /// The ARNs of the managed policies attached to `holder`.
    async fn attached(&self, holder: Holder) -> anyhow::Result<Vec<String>> {
        let c = &self.client;
        let policies = match &holder {
            Holder::Group(n) => every!(c.list_attached_group_policies().group_name(n))
                .map_err(|e| sdk_error("iam:ListAttachedGroupPolicies", e))?,
            Holder::User(n) => every!(c.list_attached_user_policies().user_name(n))
                .map_err(|e| sdk_error("iam:ListAttachedUserPolicies", e))?,
            Holder::Role(n) => every!(c.list_attached_role_policies().role_name(n))
                .map_err(|e| sdk_error("iam:ListAttachedRolePolicies", e))?,
        };
        Ok(policies
            .iter()
            .filter_map(|p| p.policy_arn().map(str::to_owned))
            .collect())
    }

    /// The ids of `user`'s access keys.
    async fn keys(&self, user: &str) -> anyhow::Result<Vec<String>> {
        let keys = every!(self.client.list_access_keys().user_name(user))
            .map_err(|e| sdk_error("iam:ListAccessKeys", e))?;
        Ok(keys
            .iter()
            .filter_map(|k| k.access_key_id().map(str::to_owned))
            .collect())
    }

    pub async fn create_policy(
        &self,
        name: &str,
        path: &str,
        document: &serde_json::Value,
        t: &BTreeMap<String, String>,
    ) -> anyhow::Result<Made> {
        let out = self
            .client
            .create_policy()
            .policy_name(name)
            .path(path)
            .policy_document(kind::compact(document))
            .set_tags(Some(tags(t)))
            .send()
            .await
            .map_err(|e| sdk_error(&format!("iam:CreatePolicy {name}"), e))?;
        let p = out
            .policy()
            .ok_or_else(|| anyhow::anyhow!("iam:CreatePolicy {name}: no policy in the answer"))?;
        Ok(Made {
            id: p.policy_id().unwrap_or_default().to_owned(),
            arn: p.arn().unwrap_or_default().to_owned(),
        })
    }

    /// Makes `document` the default version of `arn`, deleting version `drop` first.
    pub async fn new_policy_version(
        &self,
        arn: &str,
        document: &serde_json::Value,
        drop: Option<&str>,
    ) -> anyhow::Result<()> {
        if let Some(v) = drop {
            gone(
                "iam:DeletePolicyVersion",
                self.client
                    .delete_policy_version()
                    .policy_arn(arn)
                    .version_id(v)
                    .send()
                    .await,
            )?;
        }
        self.client
            .create_policy_version()
            .policy_arn(arn)
            .policy_document(kind::compact(document))
            .set_as_default(true)
            .send()
            .await
            .map_err(|e| sdk_error(&format!("iam:CreatePolicyVersion {arn}"), e))?;
        Ok(())
    }

    pub async fn create_group(&self, name: &str, path: &str) -> anyhow::Result<Made> {
        let out = self
            .client
            .create_group()
            .group_name(name)
            .path(path)
            .send()
            .await
            .map_err(|e| sdk_error(&format!("iam:CreateGroup {name}"), e))?;
        let g = out
            .group()
            .ok_or_else(|| anyhow::anyhow!("iam:CreateGroup {name}: no group in the answer"))?;
        Ok(Made {
            id: g.group_id().to_owned(),
            arn: g.arn().to_owned(),
        })
    }

    pub async fn create_user(
        &self,
        name: &str,
        path: &str,
        t: &BTreeMap<String, String>,
    ) -> anyhow::Result<Made> {
        let out = self
            .client
            .create_user()
            .user_name(name)
            .path(path)
            .set_tags(Some(tags(t)))
            .send()
            .await
            .map_err(|e| sdk_error(&format!("iam:CreateUser {name}"), e))?;
        let u = out
            .user()
            .ok_or_else(|| anyhow::anyhow!("iam:CreateUser {name}: no user in the answer"))?;
        Ok(Made {
            id: u.user_id().to_owned(),
            arn: u.arn().to_owned(),
        })
    }

    pub async fn create_role(
        &self,
        name: &str,
        path: &str,
        trust: &serde_json::Value,
        t: &BTreeMap<String, String>,
    ) -> anyhow::Result<Made> {
        let out = self
            .client
            .create_role()
            .role_name(name)
            .path(path)
            .assume_role_policy_document(kind::compact(trust))
            .set_tags(Some(tags(t)))
            .send()
            .await
            .map_err(|e| sdk_error(&format!("iam:CreateRole {name}"), e))?;
        let r = out
            .role()
            .ok_or_else(|| anyhow::anyhow!("iam:CreateRole {name}: no role in the answer"))?;
        Ok(Made {
            id: r.role_id().to_owned(),
            arn: r.arn().to_owned(),
        })
    }

    pub async fn update_trust(&self, name: &str, trust: &serde_json::Value) -> anyhow::Result<()> {
        self.client
            .update_assume_role_policy()
            .role_name(name)
            .policy_document(kind::compact(trust))
            .send()
            .await
            .map_err(|e| sdk_error(&format!("iam:UpdateAssumeRolePolicy {name}"), e))?;
        Ok(())
    }

    /// Makes instance profile `name` (unless it `exists`) and puts `role` in it.
    pub async fn create_profile(
        &self,
        name: &str,
        path: &str,
        role: &str,
        exists: bool,
        t: &BTreeMap<String, String>,
    ) -> anyhow::Result<Made> {
        let mut made = Made {
            id: String::new(),
            arn: String::new(),
        };
        if !exists {
            let out = self
                .client
                .create_instance_profile()
                .instance_profile_name(name)
                .path(path)
                .set_tags(Some(tags(t)))
                .send()
                .await
                .map_err(|e| sdk_error(&format!("iam:CreateInstanceProfile {name}"), e))?;
            if let Some(p) = out.instance_profile() {
                made.id = p.instance_profile_id().to_owned();
                made.arn = p.arn().to_owned();
            }
        }
        retry_while(
            &format!("iam:AddRoleToInstanceProfile {name}"),
            FRESH_ID_WAIT,
            no_such,
            || {
                self.client
                    .add_role_to_instance_profile()
                    .instance_profile_name(name)
                    .role_name(role)
                    .send()
            },
        )
        .await?;
        Ok(made)
    }

    /// Attaches `arn` to `holder`; a `fresh` holder (made by this run) IAM may not know
    /// yet is retried for a while.
    pub async fn attach(&self, holder: &Holder, arn: &str, fresh: bool) -> anyhow::Result<()> {
        let c = &self.client;
        let label = format!("attach {arn} to {holder}");
        let window = if fresh {
            FRESH_ID_WAIT
        } else {
            std::time::Duration::ZERO
        };
        match holder {
            Holder::Group(n) => {
                retry_while(&label, window, no_such, || {
                    c.attach_group_policy().group_name(n).policy_arn(arn).send()
                })
                .await?;
            }
            Holder::User(n) => {
                retry_while(&label, window, no_such, || {
                    c.attach_user_policy().user_name(n).policy_arn(arn).send()
                })
                .await?;
            }
            Holder::Role(n) => {
                retry_while(&label, window, no_such, || {
                    c.attach_role_policy().role_name(n).policy_arn(arn).send()
                })
                .await?;
            }
        }
        Ok(())
    }

    pub async fn detach(&self, holder: &Holder, arn: &str) -> anyhow::Result<()> {
        let c = &self.client;
        match holder {
            Holder::Group(n) => gone(
                "iam:DetachGroupPolicy",
                c.detach_group_policy()
                    .group_name(n)
                    .policy_arn(arn)
                    .send()
                    .await,
            ),
            Holder::User(n) => gone(
                "iam:DetachUserPolicy",
                c.detach_user_policy()
                    .user_name(n)
                    .policy_arn(arn)
                    .send()
                    .await,
            ),
            Holder::Role(n) => gone(
                "iam:DetachRolePolicy",
                c.detach_role_policy()
                    .role_name(n)
                    .policy_arn(arn)
                    .send()
                    .await,
            ),
        }
    }

    pub async fn join(&self, user: &str, group: &str) -> anyhow::Result<()> {
        retry_while(
            &format!("iam:AddUserToGroup {user} {group}"),
            FRESH_ID_WAIT,
            no_such,
            || {
                self.client
                    .add_user_to_group()
                    .user_name(user)
                    .group_name(group)
                    .send()
            },
        )
        .await?;
        Ok(())
    }

    pub async fn leave(&self, user: &str, group: &str) -> anyhow::Result<()> {
        gone(
            "iam:RemoveUserFromGroup",
            self.client
                .remove_user_from_group()
                .user_name(user)
                .group_name(group)
                .send()
                .await,
        )
    }

    /// Makes an access key for `user`; its id goes to config parameter `id_param`, its
    /// secret to the SecureString `secret_param`, and neither anywhere else.
    pub async fn create_access_key(
        &self,
        user: &str,
        id_param: &str,
        secret_param: &str,
    ) -> anyhow::Result<()> {
        let out = retry_while(
            &format!("iam:CreateAccessKey {user}"),
            FRESH_ID_WAIT,
            no_such,
            || self.client.create_access_key().user_name(user).send(),
        )
        .await?;
        let Some(key) = out.access_key() else {
            anyhow::bail!("iam:CreateAccessKey {user}: no key in the answer");
        };
        // Should either write fail, the next run finds a key whose id is not kept, deletes
        // it and makes another.
        self.ssm
            .config_put(secret_param, key.secret_access_key(), true)
            .await?;
        self.ssm
            .config_put(id_param, key.access_key_id(), false)
            .await?;
        Ok(())
    }

    /// Deletes access key `key_id` of `user`, then the config parameters kept for it.
    pub async fn delete_access_key(
        &self,
        user: &str,
        key_id: &str,
        params: Option<(&str, &str)>,
    ) -> anyhow::Result<()> {
        gone(
            "iam:DeleteAccessKey",
            self.client
                .delete_access_key()
                .user_name(user)
                .access_key_id(key_id)
                .send()
                .await,
        )?;
        if let Some((id, secret)) = params {
            self.ssm
                .delete_all(&[id.to_owned(), secret.to_owned()])
                .await?;
        }
        Ok(())
    }

    /// Deletes heet's entity `name` of `kind`, undoing first what IAM requires undone, as
    /// IAM lists it now: a user's memberships, policies, access keys and login profile; a
    /// group's members and policies; a role's policies and the profiles holding it; a
    /// profile's roles; a policy's non-default versions. What is gone already is fine.
    pub async fn delete(&self, kind: Kind, name: &str, arn: &str) -> anyhow::Result<()> {
        let c = &self.client;
        match kind {
            Kind::User => {
                let groups = every!(c.list_groups_for_user().user_name(name));
                let groups = match groups {
                    Err(e) if no_such(&e) => return Ok(()),
                    r => r.map_err(|e| sdk_error("iam:ListGroupsForUser", e))?,
                };
                for g in &groups {
                    self.leave(name, g.group_name()).await?;
                }
                let holder = Holder::User(name.to_owned());
                for p in self.attached(holder.clone()).await? {
                    self.detach(&holder, &p).await?;
                }
                for k in self.keys(name).await? {
                    self.delete_access_key(name, &k, None).await?;
                }
                gone(
                    "iam:DeleteLoginProfile",
                    c.delete_login_profile().user_name(name).send().await,
                )?;
                gone(
                    "iam:DeleteUser",
                    c.delete_user().user_name(name).send().await,
                )
            }
            Kind::Group => {
                let members = every!(c.get_group().group_name(name));
                let members = match members {
                    Err(e) if no_such(&e) => return Ok(()),
                    r => r.map_err(|e| sdk_error("iam:GetGroup", e))?,
                };
                for u in &members {
                    self.leave(u.user_name(), name).await?;
                }
                let holder = Holder::Group(name.to_owned());
                for p in self.attached(holder.clone()).await? {
                    self.detach(&holder, &p).await?;
                }
                gone(
                    "iam:DeleteGroup",
                    c.delete_group().group_name(name).send().await,
                )
            }
            Kind::Role => {
                let holder = Holder::Role(name.to_owned());
                let attached = match self.attached(holder.clone()).await {
                    Ok(a) => a,
                    Err(e) if e.to_string().contains("NoSuchEntity") => return Ok(()),
                    Err(e) => return Err(e),
                };
                for p in attached {
                    self.detach(&holder, &p).await?;
                }
                let profiles = every!(c.list_instance_profiles_for_role().role_name(name))
                    .map_err(|e| sdk_error("iam:ListInstanceProfilesForRole", e))?;
                for p in &profiles {
                    gone(
                        "iam:RemoveRoleFromInstanceProfile",
                        c.remove_role_from_instance_profile()
                            .instance_profile_name(p.instance_profile_name())
                            .role_name(name)
                            .send()
                            .await,
                    )?;
                }
                gone(
                    "iam:DeleteRole",
                    c.delete_role().role_name(name).send().await,
                )
            }
            Kind::Profile => {
                let profile = c
                    .get_instance_profile()
                    .instance_profile_name(name)
                    .send()
                    .await;
                let profile = match profile {
                    Err(e) if no_such(&e) => return Ok(()),
                    r => r.map_err(|e| sdk_error("iam:GetInstanceProfile", e))?,
                };
                for r in profile
                    .instance_profile()
                    .map(|p| p.roles())
                    .unwrap_or_default()
                {
                    gone(
                        "iam:RemoveRoleFromInstanceProfile",
                        c.remove_role_from_instance_profile()
                            .instance_profile_name(name)
                            .role_name(r.role_name())
                            .send()
                            .await,
                    )?;
                }
                gone(
                    "iam:DeleteInstanceProfile",
                    c.delete_instance_profile()
                        .instance_profile_name(name)
                        .send()
                        .await,
                )
            }
            Kind::Policy => {
                let versions = every!(c.list_policy_versions().policy_arn(arn));
                let versions = match versions {
                    Err(e) if no_such(&e) => return Ok(()),
                    r => r.map_err(|e| sdk_error("iam:ListPolicyVersions", e))?,
                };
                for v in versions.iter().filter(|v| !v.is_default_version()) {
                    gone(
                        "iam:DeletePolicyVersion",
                        c.delete_policy_version()
                            .policy_arn(arn)
                            .version_id(v.version_id().unwrap_or_default())
                            .send()
                            .await,
                    )?;
                }
                match c.delete_policy().policy_arn(arn).send().await {
                    Ok(_) => Ok(()),
                    Err(e) if no_such(&e) => Ok(()),
                    Err(e) if e.code() == Some("DeleteConflict") => anyhow::bail!(
                        "iam policy {name} is still attached to an entity heet did not create: detach it there, then run again ({})",
                        e.message().unwrap_or("DeleteConflict")
                    ),
                    Err(e) => Err(sdk_error("iam:DeletePolicy", e)),
                }
            }
        }
    }
}
