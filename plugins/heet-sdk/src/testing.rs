//! Builders for hook inputs, so a plugin's logic is unit-tested natively with `cargo test`.

use crate::{InstanceContext, RoleContext};

/// An instance context for `project`/`env`/`role`, index 1 of 1, in us-east-1, no domain.
pub fn instance(project: &str, env: &str, role: &str) -> InstanceContext {
    InstanceContext {
        project: project.to_owned(),
        env: env.to_owned(),
        role: role.to_owned(),
        index: 1,
        count: 1,
        region: "us-east-1".to_owned(),
        domain: None,
    }
}

/// A role context for `project`/`env`/`role` in us-east-1, no domain.
pub fn role(project: &str, env: &str, role: &str) -> RoleContext {
    RoleContext {
        project: project.to_owned(),
        env: env.to_owned(),
        role: role.to_owned(),
        region: "us-east-1".to_owned(),
        domain: None,
    }
}
