//! Route53: find (or create) the project's zone, list its CNAMEs, apply record changes in as
//! few batches as Route53's limits allow, one change to a zone at a time.
//!
//! A change is sent without waiting for the previous one to be INSYNC: Route53 refuses a
//! change only while it is still processing the previous request (PriorRequestNotComplete,
//! which the SDK retries as throttling), not while that change propagates (up to 60 s).

use std::collections::BTreeMap;

use aws_sdk_route53::Client;
use aws_sdk_route53::types::{
    Change, ChangeAction, ChangeBatch, ResourceRecord, ResourceRecordSet, RrType,
};

use super::sdk_error;
use crate::kinds::records::{ObservedRecord, RecordAction, RecordOp, Zone, record_type};

/// Route53's limits per ChangeResourceRecordSets: 1,000 records (an UPSERT counts twice)
/// and 32,000 characters of record values.
const BATCH_RECORDS: usize = 1000;
const BATCH_CHARS: usize = 32_000;
/// How often a batch Route53 refused as invalid is looked at again and resent.
const RECONCILE_ROUNDS: usize = 3;

#[derive(Clone)]
pub struct Route53 {
    client: Client,
}

/// `ops` in batches that fit Route53's limits, in order. A record changing type (its
/// DELETE, then its successor's CREATE) stays in one batch: a batch is applied whole, and
/// the name must never be left with neither.
fn batches(ops: &[RecordOp]) -> Vec<&[RecordOp]> {
    let mut out = Vec::new();
    let (mut start, mut records, mut chars) = (0, 0, 0);
    let mut i = 0;
    while i < ops.len() {
        let pair = ops[i].action == RecordAction::Delete
            && ops
                .get(i + 1)
                .is_some_and(|n| n.name == ops[i].name && n.action != RecordAction::Delete);
        let unit = &ops[i..if pair { i + 2 } else { i + 1 }];
        let weight: usize = unit
            .iter()
            .map(|op| {
                if op.action == RecordAction::Upsert {
                    2
                } else {
                    1
                }
            })
            .sum();
        let size: usize = unit.iter().map(|op| op.target.len()).sum();
        if i > start && (records + weight > BATCH_RECORDS || chars + size > BATCH_CHARS) {
            out.push(&ops[start..i]);
            (start, records, chars) = (i, 0, 0);
        }
        records += weight;
        chars += size;
        i += unit.len();
    }
    if start < ops.len() {
        out.push(&ops[start..]);
    }
    out
}

/// What is left of a refused batch once the zone is read again: a lost answer's retry finds
/// its own changes made. A name taken meanwhile by someone else is an error.
fn remaining(
    ops: &[RecordOp],
    records: &BTreeMap<String, ObservedRecord>,
) -> anyhow::Result<Vec<RecordOp>> {
    let mut left = Vec::new();
    for op in ops {
        let current = records.get(&op.name);
        let done = current.is_some_and(|r| r.holds(&op.target));
        // What the name holds now goes in this batch (a record changing type).
        let deleted_here = |op: &RecordOp| {
            ops.iter().any(|o| {
                o.name == op.name
                    && o.action == RecordAction::Delete
                    && current.is_some_and(|r| r.holds(&o.target))
            })
        };
        match op.action {
            RecordAction::Create | RecordAction::Upsert if done => {}
            RecordAction::Create if current.is_some() && !deleted_here(op) => anyhow::bail!(
                "route53: {} was created by someone else meanwhile ({}): nothing of this batch was applied",
                op.name,
                current.map(|r| r.values.join(",")).unwrap_or_default()
            ),
            RecordAction::Create | RecordAction::Upsert => left.push(op.clone()),
            RecordAction::Delete if done => left.push(op.clone()),
            RecordAction::Delete => {
                // A record changing type is deleted beside its successor's create.
                let replaced = ops
                    .iter()
                    .any(|o| o.name == op.name && o.action != RecordAction::Delete);
                if current.is_some() && !replaced {
                    tracing::warn!(
                        "route53: {} was changed by someone else meanwhile: left alone",
                        op.name
                    );
                }
            }
        }
    }
    Ok(left)
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
    /// retried or crashed create cannot make a second zone: Route53 refuses the reference
    /// again, and the zone it made is found.
    pub async fn create_zone(&self, domain: &str, project: &str) -> anyhow::Result<Zone> {
        let created = self
            .client
            .create_hosted_zone()
            .name(absolute(domain))
            .caller_reference(format!("heet-{project}-{}", relative(domain)))
            .send()
            .await;
        let out = match created {
            Ok(out) => out,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_hosted_zone_already_exists()) =>
            {
                return self.find_zone(domain).await?.ok_or_else(|| {
                    anyhow::anyhow!(
                        "route53:CreateHostedZone: a zone was created for {domain} with heet's caller reference, but none is named {domain}"
                    )
                });
            }
            Err(e) => return Err(sdk_error("route53:CreateHostedZone", e)),
        };
        let zone = out
            .hosted_zone()
            .ok_or_else(|| anyhow::anyhow!("route53:CreateHostedZone returned no zone"))?;
        Ok(Zone {
            id: zone.id().trim_start_matches("/hostedzone/").to_owned(),
            name: relative(zone.name()),
        })
    }

    /// Every record of the zone by lower-case name without the trailing dot. Only names
    /// matter to heet: a name holding anything but one CNAME or A record is reported as such.
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

    /// Applies `ops` to the zone in as few ChangeResourceRecordSets as Route53's limits allow,
    /// one after the other. A batch refused as invalid (a retry
    /// whose first answer was lost, a record changed meanwhile) is resent with what is left
    /// of it after reading the zone again.
    pub async fn change(&self, zone: &Zone, ops: &[RecordOp]) -> anyhow::Result<()> {
        for batch in batches(ops) {
            let mut batch = batch.to_vec();
            for round in 1.. {
                if batch.is_empty() {
                    break;
                }
                match self.send(zone, &batch).await {
                    Ok(()) => break,
                    Err(e)
                        if round <= RECONCILE_ROUNDS
                            && e.as_service_error()
                                .is_some_and(|e| e.is_invalid_change_batch()) =>
                    {
                        tracing::debug!(
                            "route53: {}: reading the zone again",
                            sdk_error("route53:ChangeResourceRecordSets", e)
                        );
                        batch = remaining(&batch, &self.records(zone).await?)?;
                    }
                    Err(e) => return Err(sdk_error("route53:ChangeResourceRecordSets", e)),
                }
            }
        }
        Ok(())
    }

    /// Sends one batch.
    async fn send(
        &self,
        zone: &Zone,
        ops: &[RecordOp],
    ) -> Result<
        (),
        aws_sdk_route53::error::SdkError<
            aws_sdk_route53::operation::change_resource_record_sets::ChangeResourceRecordSetsError,
        >,
    > {
        let changes = ops
            .iter()
            .map(|op| {
                let action = match op.action {
                    RecordAction::Create => ChangeAction::Create,
                    RecordAction::Upsert => ChangeAction::Upsert,
                    RecordAction::Delete => ChangeAction::Delete,
                };
                let set = ResourceRecordSet::builder()
                    .name(absolute(&op.name))
                    .r#type(match record_type(&op.target) {
                        "A" => RrType::A,
                        _ => RrType::Cname,
                    })
                    .ttl(op.ttl)
                    .resource_records(ResourceRecord::builder().value(&op.target).build()?)
                    .build()?;
                Change::builder()
                    .action(action)
                    .resource_record_set(set)
                    .build()
            })
            .collect::<Result<Vec<_>, aws_sdk_route53::error::BuildError>>()
            .map_err(aws_sdk_route53::error::SdkError::construction_failure)?;
        let batch = ChangeBatch::builder()
            .comment("heet")
            .set_changes(Some(changes))
            .build()
            .map_err(aws_sdk_route53::error::SdkError::construction_failure)?;
        self.client
            .change_resource_record_sets()
            .hosted_zone_id(&zone.id)
            .change_batch(batch)
            .send()
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(action: RecordAction, name: &str, target: &str) -> RecordOp {
        RecordOp {
            action,
            name: name.into(),
            target: target.into(),
            ttl: 300,
        }
    }

    #[test]
    fn batches_respect_record_and_character_limits() {
        let creates: Vec<RecordOp> = (0..1500)
            .map(|i| op(RecordAction::Create, &format!("r{i}.x"), "t.example"))
            .collect();
        let sizes: Vec<usize> = batches(&creates).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, [1000, 500]);
        let upserts: Vec<RecordOp> = (0..1200)
            .map(|i| op(RecordAction::Upsert, &format!("r{i}.x"), "t.example"))
            .collect();
        let sizes: Vec<usize> = batches(&upserts).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, [500, 500, 200], "an UPSERT counts twice");
        let long = "ec2-54-214-153-61.compute-1.amazonaws.com"; // 41 characters
        let long_ones: Vec<RecordOp> = (0..900)
            .map(|i| op(RecordAction::Create, &format!("r{i}.x"), long))
            .collect();
        let sizes: Vec<usize> = batches(&long_ones).iter().map(|b| b.len()).collect();
        assert_eq!(
            sizes,
            [32_000 / 41, 900 - 32_000 / 41],
            "32,000 value characters"
        );
        assert!(batches(&[]).is_empty());
        // 999 creates, then a record changing type: its DELETE and CREATE go together.
        let mut swap: Vec<RecordOp> = (0..999)
            .map(|i| op(RecordAction::Create, &format!("r{i}.x"), "t.example"))
            .collect();
        swap.push(op(RecordAction::Delete, "www.x", "t.example"));
        swap.push(op(RecordAction::Create, "www.x", "10.0.0.1"));
        let sizes: Vec<usize> = batches(&swap).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, [999, 2]);
    }

    #[test]
    fn a_refused_batch_keeps_only_what_is_not_done_yet() {
        let cname = |t: &str| ObservedRecord {
            kind: "CNAME".into(),
            values: vec![t.into()],
            ttl: Some(300),
        };
        let records: BTreeMap<String, ObservedRecord> = [
            ("made.x".to_owned(), cname("a")),
            ("kept.x".to_owned(), cname("b")),
            ("changed.x".to_owned(), cname("someone")),
        ]
        .into();
        let ops = [
            op(RecordAction::Create, "made.x", "a"),
            op(RecordAction::Create, "new.x", "n"),
            op(RecordAction::Delete, "gone.x", "g"),
            op(RecordAction::Delete, "kept.x", "b"),
            op(RecordAction::Delete, "changed.x", "c"),
        ];
        let left = remaining(&ops, &records).unwrap();
        assert_eq!(
            left,
            [
                op(RecordAction::Create, "new.x", "n"),
                op(RecordAction::Delete, "kept.x", "b")
            ]
        );
        let taken = remaining(&[op(RecordAction::Create, "changed.x", "c")], &records);
        assert!(taken.unwrap_err().to_string().contains("someone else"));
    }
}
