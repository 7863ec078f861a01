//! Builders for hook inputs, so a plugin's logic is unit-tested natively with `cargo test`.

use crate::{
    DesiredInstance, DesiredState, EnvVar, InstanceContext, RoleContext, Tag, TaskContext,
    TaskScript,
};

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

/// A desired instance of `role` at `index`, named `<role>-<index>`, with no tags, CNAMEs or
/// user_data: add what the test is about.
pub fn desired_instance(role: &str, index: u32, instance_type: &str) -> DesiredInstance {
    DesiredInstance {
        role: role.to_owned(),
        index,
        name: format!("{role}-{index}"),
        instance_type: instance_type.to_owned(),
        ami: "ami-12c6146b".to_owned(),
        tags: Vec::new(),
        cnames: Vec::new(),
        user_data: String::new(),
    }
}

/// The desired state of `project`/`env` in us-east-1, no domain, holding `instances`, with no
/// firewall rules.
pub fn state(project: &str, env: &str, instances: Vec<DesiredInstance>) -> DesiredState {
    DesiredState {
        project: project.to_owned(),
        env: env.to_owned(),
        region: "us-east-1".to_owned(),
        domain: None,
        instances,
        firewall: Vec::new(),
    }
}

/// A tag, for building expected answers.
pub fn tag(key: &str, value: &str) -> Tag {
    Tag {
        key: key.to_owned(),
        value: value.to_owned(),
    }
}

/// The context of `role.task` in `project`/`env`, us-east-1, run on its own (no scenario) of a
/// definition without a version.
pub fn task(project: &str, env: &str, role: &str, task: &str) -> TaskContext {
    TaskContext {
        project: project.to_owned(),
        env: env.to_owned(),
        region: "us-east-1".to_owned(),
        role: role.to_owned(),
        task: task.to_owned(),
        scenario: None,
        version: None,
    }
}

/// A task's script with `env` as its variables, in order.
pub fn script(script: &str, env: &[(&str, &str)]) -> TaskScript {
    TaskScript {
        script: script.to_owned(),
        env: env
            .iter()
            .map(|(name, value)| EnvVar {
                name: (*name).to_owned(),
                value: (*value).to_owned(),
            })
            .collect(),
    }
}

thread_local! {
    static STACK_OUTPUTS: std::cell::RefCell<std::collections::BTreeMap<(String, String), String>> =
        const { std::cell::RefCell::new(std::collections::BTreeMap::new()) };
}

/// What [`crate::stack_output`] answers natively on this thread, as the host would for a
/// stack that has this output.
pub fn set_stack_output(stack: &str, output: &str, value: &str) {
    STACK_OUTPUTS.with(|o| {
        o.borrow_mut()
            .insert((stack.to_owned(), output.to_owned()), value.to_owned())
    });
}

pub(crate) fn stack_output(stack: &str, output: &str) -> Option<String> {
    STACK_OUTPUTS.with(|o| {
        o.borrow()
            .get(&(stack.to_owned(), output.to_owned()))
            .cloned()
    })
}
