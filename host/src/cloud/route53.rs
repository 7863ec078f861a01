//! Route53: find (or create) the project's zone, list its CNAMEs, apply record changes in
//! one batch per zone.

use std::collections::BTreeMap;

use aws_sdk_route53::Client;
use aws_sdk_route53::types::{
    Change, ChangeAction, ChangeBatch, ResourceRecord, ResourceRecordSet, RrType,
};

use super::sdk_error;
use crate::plan::{ObservedRecord, RecordOp, Zone};

/// Route53 takes at most 1,000 records per ChangeResourceRecordSets; each change here holds
/// one record, and a margin keeps the request under its 32,000-character limit too.
const CHANGES_PER_BATCH: usize = 500;

#[derive(Clone)]
pub struct Route53 {
    client: Client,
}

/// `name` with exactly one trailing dot, as Route53 spells names.
pub fn absolute(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}

/// Route53 escapes some characters in names it returns (`*` as `\052`); heet's names hold none,
/// so only the trailing dot needs removing.
fn relative(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl Route53 {
    pub(super) fn new(client: Client) -> Route53 {
        Route53 { client }
    }

    /// The public zone named exactly `domain`, if there is one.
    pub async fn find_zone(&self, domain: &str) -> anyhow::Result<Option<Zone>> {
        let out = self
            .client
            .list_hosted_zones_by_name()
            .dns_name(absolute(domain))
            .max_items(1)
            .send()
            .await
            .map_err(|e| sdk_error("route53:ListHostedZonesByName", e))?;
        Ok(out
            .hosted_zones()
            .iter()
            .find(|z| relative(z.name()) == relative(domain))
            .map(|z| Zone {
                id: z.id().trim_start_matches("/hostedzone/").to_owned(),
                name: relative(z.name()),
            }))
    }

    /// Creates the zone. The caller reference is derived from the project and domain, so a
    /// retried or crashed create cannot make a second zone.
    pub async fn create_zone(&self, domain: &str, project: &str) -> anyhow::Result<Zone> {
        let out = self
            .client
            .create_hosted_zone()
            .name(absolute(domain))
            .caller_reference(format!("heet-{project}-{}", relative(domain)))
            .send()
            .await
            .map_err(|e| sdk_error("route53:CreateHostedZone", e))?;
        let zone = out
            .hosted_zone()
            .ok_or_else(|| anyhow::anyhow!("route53:CreateHostedZone returned no zone"))?;
        Ok(Zone {
            id: zone.id().trim_start_matches("/hostedzone/").to_owned(),
            name: relative(zone.name()),
        })
    }

    /// Every record of the zone by lower-case name without the trailing dot. Only names
    /// matter to heet: a name holding anything but one CNAME is reported as such.
    pub async fn records(&self, zone: &Zone) -> anyhow::Result<BTreeMap<String, ObservedRecord>> {
        let mut found: BTreeMap<String, ObservedRecord> = BTreeMap::new();
        let mut start: Option<(String, RrType)> = None;
        loop {
            let mut req = self
                .client
                .list_resource_record_sets()
                .hosted_zone_id(&zone.id)
                .max_items(300);
            if let Some((name, ty)) = start.take() {
                req = req.start_record_name(name).start_record_type(ty);
            }
            let out = req
                .send()
                .await
                .map_err(|e| sdk_error("route53:ListResourceRecordSets", e))?;
            for set in out.resource_record_sets() {
                let name = relative(set.name());
                let entry = found.entry(name).or_insert_with(|| ObservedRecord {
                    kind: set.r#type().as_str().to_owned(),
                    values: Vec::new(),
                    ttl: set.ttl(),
                });
                if entry.kind != set.r#type().as_str() {
                    entry.kind = format!("{}+{}", entry.kind, set.r#type().as_str());
                }
                entry
                    .values
                    .extend(set.resource_records().iter().map(|r| relative(r.value())));
            }
            match (
                out.is_truncated(),
                out.next_record_name(),
                out.next_record_type(),
            ) {
                (true, Some(name), Some(ty)) => start = Some((name.to_owned(), ty.clone())),
                _ => break,
            }
        }
        Ok(found)
    }

    /// Applies `ops` to the zone, in as few ChangeResourceRecordSets calls as the limits allow
    /// (one for up to 500 records).
    pub async fn change(&self, zone: &Zone, ops: &[RecordOp]) -> anyhow::Result<()> {
        for chunk in ops.chunks(CHANGES_PER_BATCH) {
            let changes = chunk
                .iter()
                .map(|op| {
                    let (action, name, target, ttl) = match op {
                        RecordOp::Upsert { name, target, ttl } => {
                            (ChangeAction::Upsert, name, target, *ttl)
                        }
                        RecordOp::Delete { name, target, ttl } => {
                            (ChangeAction::Delete, name, target, *ttl)
                        }
                    };
                    let set = ResourceRecordSet::builder()
                        .name(absolute(name))
                        .r#type(RrType::Cname)
                        .ttl(ttl)
                        .resource_records(ResourceRecord::builder().value(target).build()?)
                        .build()?;
                    Change::builder()
                        .action(action)
                        .resource_record_set(set)
                        .build()
                })
                .collect::<Result<Vec<_>, aws_sdk_route53::error::BuildError>>()?;
            self.client
                .change_resource_record_sets()
                .hosted_zone_id(&zone.id)
                .change_batch(
                    ChangeBatch::builder()
                        .comment("heet")
                        .set_changes(Some(changes))
                        .build()?,
                )
                .send()
                .await
                .map_err(|e| sdk_error("route53:ChangeResourceRecordSets", e))?;
        }
        Ok(())
    }
}
