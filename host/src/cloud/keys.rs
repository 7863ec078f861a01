//! EC2 key pairs heet makes per role, and the private keys of those EC2 made, kept as
//! SecureStrings in the environment's keys folder. A private key passes from EC2's answer to
//! Parameter Store and is read back only by `heet keys get --reveal`.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::primitives::Blob;
use aws_sdk_ec2::types::{KeyType, ResourceType};

use super::net::{filters, resource, spec, tag_map};
use super::{Net, sdk_error};
use crate::kinds::network::{self, Detail, ObservedResource};
use crate::namespace::TAG_RESOURCE;
use crate::validate;

impl Net {
    /// heet's key pairs of `project`/`env`, and private keys kept for key pairs that are gone
    /// (so `down` deletes them too).
    pub(super) async fn observe_keys(
        &self,
        project: &str,
        env: &str,
    ) -> anyhow::Result<Vec<ObservedResource>> {
        let folder = network::key_path(project, env);
        let pairs = async {
            self.client
                .describe_key_pairs()
                .set_filters(Some(filters(project, env)))
                .include_public_key(true)
                .send()
                .await
                .map_err(|e| sdk_error("ec2:DescribeKeyPairs", e))
        };
        let (pairs, stored) = tokio::try_join!(pairs, self.ssm.names(&folder))?;
        let stored: BTreeSet<String> = stored
            .into_iter()
            .filter_map(|n| Some(n.strip_prefix(&folder)?.to_owned()))
            .collect();
        let mut found = Vec::new();
        for k in pairs.key_pairs() {
            let tags = tag_map(k.tags());
            let role = tags
                .get(TAG_RESOURCE)
                .and_then(|r| r.strip_prefix("key/"))
                .unwrap_or_default();
            let detail = Detail::KeyPair {
                public_key: k.public_key().map(validate::public_key_body),
                stored: stored.contains(role),
            };
            found.push(resource(tags, k.key_name().unwrap_or_default(), detail));
        }
        // Only heet writes under the environment's folder: what is kept there is heet's, as
        // its ledger is. A key kept for a key pair that is gone is deleted with the rest.
        for role in stored {
            let resource = network::key_resource(&role);
            let paired = found
                .iter()
                .any(|o| o.resource == resource && o.is_heets(project, env));
            if !paired {
                found.push(ObservedResource {
                    tags: network::tags(project, env, &resource, &role),
                    resource,
                    aws_id: String::new(),
                    detail: Detail::KeyPair {
                        public_key: None,
                        stored: true,
                    },
                });
            }
        }
        Ok(found)
    }

    /// Makes an ed25519 key pair and keeps its private key at `parameter`; returns its name.
    pub async fn create_key(
        &self,
        name: &str,
        parameter: &str,
        tags: &BTreeMap<String, String>,
    ) -> anyhow::Result<String> {
        let out = self
            .client
            .create_key_pair()
            .key_name(name)
            .key_type(KeyType::Ed25519)
            .tag_specifications(spec(ResourceType::KeyPair, tags))
            .send()
            .await
            .map_err(|e| sdk_error(&format!("ec2:CreateKeyPair {name}"), e))?;
        let Some(private) = out.key_material() else {
            anyhow::bail!("ec2:CreateKeyPair {name}: no private key in the answer");
        };
        // Should this fail, the next run finds the key pair without its private key and
        // makes it again.
        self.ssm.config_put(parameter, private, true).await?;
        Ok(name.to_owned())
    }

    /// Imports `public_key` as key pair `name`.
    pub async fn import_key(
        &self,
        name: &str,
        public_key: &str,
        tags: &BTreeMap<String, String>,
    ) -> anyhow::Result<String> {
        self.client
            .import_key_pair()
            .key_name(name)
            .public_key_material(Blob::new(public_key.as_bytes()))
            .tag_specifications(spec(ResourceType::KeyPair, tags))
            .send()
            .await
            .map_err(|e| sdk_error(&format!("ec2:ImportKeyPair {name}"), e))?;
        Ok(name.to_owned())
    }

    /// Deletes the private key at `parameter` (when one is kept) first, then key pair
    /// `name`: a run stopped in between leaves a key pair without its private key, which the
    /// next run replaces or deletes.
    pub async fn delete_key(
        &self,
        name: Option<&str>,
        parameter: Option<&str>,
    ) -> anyhow::Result<()> {
        if let Some(parameter) = parameter {
            self.ssm.delete(parameter).await?;
        }
        if let Some(name) = name {
            match self.client.delete_key_pair().key_name(name).send().await {
                Ok(_) => {}
                Err(e) if e.code() == Some("InvalidKeyPair.NotFound") => {}
                Err(e) => return Err(sdk_error(&format!("ec2:DeleteKeyPair {name}"), e)),
            }
        }
        Ok(())
    }
}
