//! `heet graph`: an environment as a picture, from the definition and the plugins' answers as
//! `plan` would make it: its roles (how many of which type, with their addresses, volumes and
//! key pairs), who may reach them on which ports (the firewall: from networks and from other
//! roles' groups), and the DNS names pointing at their instances; or, `--live`, the same of
//! what runs: heet's own instances, the rules of its groups, the records of its ledger. A
//! value built once, then written as DOT, as Mermaid, or as SVG drawn here by layout-rs (no
//! Graphviz needed).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::desired::Desired;
use crate::kinds::instances::ObservedInstance;
use crate::kinds::network::{Detail, ObservedResource, Source};
use crate::kinds::records::DnsState;

/// What a node stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum NodeKind {
    Role,
    /// A network a role's group admits (`allow_cidr`).
    Network,
    /// A DNS name pointing at a role's instances.
    Name,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Node {
    /// Stable and unique within the graph: `role:www`, `net:0.0.0.0/0`, `name:www-01.shop.com`.
    pub id: String,
    /// Lines, shown one under the other.
    pub label: Vec<String>,
    pub kind: NodeKind,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Edge {
    pub from: String,
    pub to: String,
    pub label: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Graph {
    /// `project/env`.
    pub title: String,
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
}

/// What `of` and `live` add to a graph, each node and edge made one way: nodes and edges
/// once each, and the ports each source may reach each role on, gathered into one edge.
#[derive(Default)]
struct Builder {
    nodes: BTreeSet<Node>,
    edges: BTreeSet<Edge>,
    /// By (source, role): ports, a range by its first.
    ports: BTreeMap<(String, String), BTreeSet<(i32, i32)>>,
}

impl Builder {
    fn role(&mut self, role: &str, label: Vec<String>) {
        self.nodes.insert(Node {
            id: format!("role:{role}"),
            label: std::iter::once(role.to_owned()).chain(label).collect(),
            kind: NodeKind::Role,
        });
    }

    /// A network (a CIDR, or a group heet did not make), as the source of an edge.
    fn network(&mut self, name: &str) -> String {
        let id = format!("net:{name}");
        self.nodes.insert(Node {
            id: id.clone(),
            label: vec![name.to_owned()],
            kind: NodeKind::Network,
        });
        id
    }

    /// `name` points at `role`'s instance `index`.
    fn name(&mut self, name: &str, role: &str, index: u32) {
        self.nodes.insert(Node {
            id: format!("name:{name}"),
            label: vec![name.to_owned()],
            kind: NodeKind::Name,
        });
        self.edges.insert(Edge {
            from: format!("name:{name}"),
            to: format!("role:{role}"),
            label: format!("CNAME → {role}[{index}]"),
        });
    }

    /// `from` may reach `role` on the ports `from..=to`.
    fn admits(&mut self, from: String, role: &str, ports: (i32, i32)) {
        self.ports
            .entry((from, format!("role:{role}")))
            .or_default()
            .insert(ports);
    }

    fn finish(mut self, title: String) -> Graph {
        for ((from, to), ports) in self.ports {
            let ports: Vec<String> = ports
                .into_iter()
                .map(|(a, b)| {
                    if a == b {
                        a.to_string()
                    } else {
                        format!("{a}-{b}")
                    }
                })
                .collect();
            self.edges.insert(Edge {
                from,
                to,
                label: format!("tcp {}", ports.join(", ")),
            });
        }
        Graph {
            title,
            nodes: self.nodes.into_iter().collect(),
            edges: self.edges.into_iter().collect(),
        }
    }
}

/// The lines under a role's name: its instances by type (and state), or that it has none.
fn counts<K: std::fmt::Display>(counts: &BTreeMap<K, usize>) -> Vec<String> {
    if counts.is_empty() {
        return vec!["no instances".to_owned()];
    }
    counts.iter().map(|(k, n)| format!("{n} × {k}")).collect()
}

/// The graph of `desired`; `domain` completes its CNAMEs.
pub fn of(desired: &Desired, domain: Option<&str>) -> Graph {
    let mut roles: BTreeMap<&str, Vec<&crate::desired::DesiredInstance>> = BTreeMap::new();
    for i in &desired.instances {
        roles.entry(&i.role).or_default().push(i);
    }
    for g in &desired.network.groups {
        roles.entry(&g.role).or_default();
    }
    let mut b = Builder::default();
    for (role, instances) in &roles {
        let mut types: BTreeMap<&str, usize> = BTreeMap::new();
        for i in instances {
            *types.entry(&i.instance_type).or_default() += 1;
        }
        let mut label = counts(&types);
        if let Some(v) = instances.iter().find_map(|i| i.volume) {
            label.push(format!("volume {} GiB", v.gb));
        }
        if instances.iter().any(|i| i.eip) {
            label.push("elastic ip".to_owned());
        }
        if desired.network.keys.iter().any(|k| k.role == *role) {
            label.push("key pair".to_owned());
        }
        b.role(role, label);
        for i in instances {
            for cname in &i.cnames {
                let name = match domain {
                    Some(d) => format!("{cname}.{d}"),
                    None => cname.clone(),
                };
                b.name(&name, role, i.index);
            }
        }
    }
    for g in &desired.network.groups {
        for rule in &g.rules {
            let from = match &rule.source {
                Source::Cidr(c) => b.network(c),
                Source::Role(r) => format!("role:{r}"),
            };
            let port = i32::from(rule.port);
            b.admits(from, &g.role, (port, port));
        }
    }
    b.finish(format!("{}/{}", desired.project, desired.env))
}

/// The graph of what runs in `project`/`env`: heet's own instances by role (count, type and
/// state), the rules of heet's groups, Elastic IPs, and the records its ledger owns (`dns`
/// read with the ledger) pointing at them. Look-alikes are not drawn.
pub fn live(
    project: &str,
    env: &str,
    observed: &[ObservedInstance],
    resources: &[ObservedResource],
    dns: &DnsState,
) -> Graph {
    let mine: Vec<&ObservedInstance> = observed
        .iter()
        .filter(|o| o.slot_id(project, env).is_some())
        .collect();
    let mut roles: BTreeMap<&str, BTreeMap<String, usize>> = BTreeMap::new();
    for o in &mine {
        if let (Some(role), _) = o.role_index() {
            *roles
                .entry(role)
                .or_default()
                .entry(format!("{} {}", o.instance_type, o.state))
                .or_default() += 1;
        }
    }
    // Groups by id, to name the role a rule admits; addresses by instance.
    let mut group_roles: BTreeMap<&str, &str> = BTreeMap::new();
    let mut eips: BTreeSet<&str> = BTreeSet::new();
    for r in resources {
        match &r.detail {
            Detail::Group { .. } => {
                if let Some(role) = r.resource.strip_prefix("group/") {
                    group_roles.insert(&r.aws_id, role);
                    roles.entry(role).or_default();
                }
            }
            Detail::Address {
                instance_id: Some(id),
                ..
            } => {
                eips.insert(id);
            }
            _ => {}
        }
    }
    let role_of = |id: &str| {
        mine.iter()
            .find(|o| o.instance_id == id)
            .and_then(|o| o.role_index().0)
    };
    let eip_roles: BTreeSet<&str> = eips.iter().filter_map(|id| role_of(id)).collect();
    let mut b = Builder::default();
    for (role, states) in &roles {
        let mut label = counts(states);
        if eip_roles.contains(role) {
            label.push("elastic ip".to_owned());
        }
        b.role(role, label);
    }
    for r in resources {
        let (Detail::Group { rules, .. }, Some(role)) =
            (&r.detail, r.resource.strip_prefix("group/"))
        else {
            continue;
        };
        for rule in rules {
            let from = match (&rule.cidr, &rule.group_id) {
                (Some(c), _) => b.network(c),
                (None, Some(g)) => match group_roles.get(g.as_str()) {
                    Some(other) => format!("role:{other}"),
                    // A group heet did not make: drawn by its id.
                    None => b.network(g),
                },
                (None, None) => continue,
            };
            b.admits(from, role, (rule.from_port, rule.to_port));
        }
    }
    let by_dns: BTreeMap<String, &ObservedInstance> = mine
        .iter()
        .flat_map(|o| o.record_targets().into_iter().map(move |t| (t, *o)))
        .collect();
    for name in dns.owned.iter().flat_map(|owned| owned.keys()) {
        let live = dns.records.get(name).and_then(|r| r.points_at());
        let Some(o) = live.and_then(|t| by_dns.get(t)) else {
            continue;
        };
        if let (Some(role), index) = o.role_index() {
            b.name(name, role, index.unwrap_or(0));
        }
    }
    b.finish(format!("{project}/{env} (live)"))
}

/// `s` as a DOT string, quotes and backslashes escaped.
fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The graph in Graphviz's DOT.
pub fn dot(g: &Graph) -> String {
    let mut out = format!("digraph {} {{\n  rankdir=LR;\n", quoted(&g.title));
    for n in &g.nodes {
        let (shape, color) = match n.kind {
            NodeKind::Role => ("box", "black"),
            NodeKind::Network => ("box", "red"),
            NodeKind::Name => ("box", "blue"),
        };
        let label: Vec<String> = n
            .label
            .iter()
            .map(|l| l.replace('\\', "\\\\").replace('"', "\\\""))
            .collect();
        let _ = writeln!(
            out,
            "  {} [shape={shape}, color={color}, label=\"{}\"];",
            quoted(&n.id),
            label.join("\\n")
        );
    }
    for e in &g.edges {
        let _ = writeln!(
            out,
            "  {} -> {} [label={}];",
            quoted(&e.from),
            quoted(&e.to),
            quoted(&e.label)
        );
    }
    out.push_str("}\n");
    out
}

/// A Mermaid identifier for `id`: letters, digits and `_` only, unique as long as ids are.
fn mermaid_id(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_string()
            } else {
                format!("_{:x}_", c as u32)
            }
        })
        .collect()
}

/// The graph as a Mermaid flowchart (GitHub renders it in Markdown).
pub fn mermaid(g: &Graph) -> String {
    let text = |s: &str| s.replace('"', "#quot;");
    let mut out = String::from("flowchart LR\n");
    for n in &g.nodes {
        let label: Vec<String> = n.label.iter().map(|l| text(l)).collect();
        let _ = writeln!(out, "  {}[\"{}\"]", mermaid_id(&n.id), label.join("<br/>"));
    }
    for e in &g.edges {
        let _ = writeln!(
            out,
            "  {} -->|\"{}\"| {}",
            mermaid_id(&e.from),
            text(&e.label),
            mermaid_id(&e.to)
        );
    }
    out
}

/// The graph drawn as SVG by layout-rs, from its DOT.
pub fn svg(g: &Graph) -> anyhow::Result<String> {
    let dot = dot(g);
    let ast = layout::gv::DotParser::new(&dot)
        .process()
        .map_err(|e| anyhow::anyhow!("internal: the graph's DOT does not parse: {e}"))?;
    let mut builder = layout::gv::GraphBuilder::new();
    builder.visit_graph(&ast);
    let mut visual = builder.get();
    let mut writer = layout::backends::svg::SVGWriter::new();
    visual.do_it(false, false, false, &mut writer);
    Ok(writer.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph() -> Graph {
        Graph {
            title: "shop/staging".into(),
            nodes: vec![
                Node {
                    id: "net:0.0.0.0/0".into(),
                    label: vec!["0.0.0.0/0".into()],
                    kind: NodeKind::Network,
                },
                Node {
                    id: "role:www".into(),
                    label: vec!["www".into(), "2 × t3.micro".into()],
                    kind: NodeKind::Role,
                },
            ],
            edges: vec![Edge {
                from: "net:0.0.0.0/0".into(),
                to: "role:www".into(),
                label: "tcp 80, 443".into(),
            }],
        }
    }

    #[test]
    fn dot_and_mermaid_name_every_node_and_edge() {
        let dot = dot(&graph());
        assert!(
            dot.contains("\"role:www\" [shape=box, color=black, label=\"www\\n2 × t3.micro\"];"),
            "{dot}"
        );
        assert!(
            dot.contains("\"net:0.0.0.0/0\" -> \"role:www\" [label=\"tcp 80, 443\"];"),
            "{dot}"
        );
        let mermaid = mermaid(&graph());
        assert!(
            mermaid.contains("role_3a_www[\"www<br/>2 × t3.micro\"]"),
            "{mermaid}"
        );
        assert!(
            mermaid.contains("-->|\"tcp 80, 443\"| role_3a_www"),
            "{mermaid}"
        );
    }

    #[test]
    fn the_svg_holds_every_label() {
        let svg = svg(&graph()).unwrap();
        assert!(svg.starts_with("<svg") || svg.contains("<svg"), "{svg}");
        for text in ["www", "2 × t3.micro", "0.0.0.0/0", "tcp 80, 443"] {
            assert!(svg.contains(text), "{text} in {svg}");
        }
    }
}
