//! The kit for writing heet plugins in plain Rust.
//!
//! A plugin declares its world with [`bindings!`], implements one plain trait per hook
//! ([`Naming`], [`Tags`], ...) and calls [`export_plugin!`] once; the macro wires those traits
//! to the exports wit-bindgen generated from the plugin's world. The WIT records ([`types`]) are shared by every plugin through
//! wit-bindgen's `with`, so helpers and tests here work for all of them, natively as well as
//! in wasm.
//!
//! ```ignore
//! heet_sdk::bindings!(
//!     world: "package my:plugin; world plugin {
//!         include heet:plugin/base@0.1.2;
//!         export heet:plugin/naming@0.1.2;
//!     }",
//!     wit: "wit",
//! );
//! struct MyPlugin;
//! impl heet_sdk::Naming for MyPlugin {
//!     fn name(ctx: &heet_sdk::InstanceContext, _current: &str) -> Option<String> {
//!         Some(format!("{}-{}-{:02}", ctx.env, ctx.role, ctx.index))
//!     }
//! }
//! heet_sdk::export_plugin!(MyPlugin, bindings, [naming]);
//! ```

mod generated {
    wit_bindgen::generate!({
        world: "base",
        path: "../../wit",
        // So plugin tests can compare answers with `assert_eq!`.
        additional_derives: [PartialEq, Eq],
    });
}

pub use generated::heet::plugin::{host, types};
pub use types::{
    DesiredInstance, DesiredState, EnvVar, IngressRule, InstanceContext, Level, RoleContext,
    RoleSize, Tag, TaskContext, TaskScript, Violation,
};
#[doc(hidden)]
pub use wit_bindgen;

pub mod pattern;
pub mod testing;

/// Parses a plugin's config (its `[plugins.config.<name>]` table as JSON) into `T`, with the
/// error shaped for [`Configure::configure`]. Derive `Deserialize` with
/// `#[serde(deny_unknown_fields)]` so a misspelt key is an error rather than ignored.
pub fn parse_config<T: serde::de::DeserializeOwned>(config_json: &str) -> Result<T, Vec<String>> {
    serde_json::from_str(config_json).map_err(|e| vec![format!("config: {e}")])
}

/// Answers the `configure` hook: validate and keep the plugin's config.
pub trait Configure {
    fn configure(config_json: &str) -> Result<(), Vec<String>>;
}

/// Answers the `naming` hook: the instance's `Name` tag.
pub trait Naming {
    fn name(ctx: &InstanceContext, current: &str) -> Option<String>;
}

/// Answers the `tags` hook: the instance's extra tags (the answer replaces `current`).
pub trait Tags {
    fn tags(ctx: &InstanceContext, current: &[Tag]) -> Option<Vec<Tag>>;
}

/// Answers the `sizing` hook: instance type, count and volume of a role.
pub trait Sizing {
    fn size(ctx: &RoleContext, current: &RoleSize) -> Option<RoleSize>;
}

/// Answers the `cnames` hook: DNS names, relative to the domain, that point at the instance.
pub trait Cnames {
    fn cnames(ctx: &InstanceContext, current: &[String]) -> Option<Vec<String>>;
}

/// Answers the `user-data` hook.
pub trait UserData {
    fn user_data(ctx: &InstanceContext, current: &str) -> Option<String>;
}

/// Answers the `guard` hook: every rule the desired state breaks.
pub trait Guard {
    fn validate(state: &DesiredState) -> Vec<Violation>;
}

/// Answers the `tasks` hook (WIT 0.1.1): a task's script and environment for one role, before
/// `heet run` sends it.
pub trait Tasks {
    fn shape(ctx: &TaskContext, current: &TaskScript) -> Option<TaskScript>;
}

/// Writes a line to the host's log, attributed to this plugin.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    host::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{level:?}] {message}");
}

/// The output `output` of the project's stack `stack` (`[stacks.<stack>]`) in the environment
/// being planned, when the stack exists and has it: what `${stacks.<stack>.<output>}` reads
/// in heet.toml (WIT 0.1.2). Natively (a plugin's unit tests) it answers from
/// [`testing::set_stack_output`].
pub fn stack_output(stack: &str, output: &str) -> Option<String> {
    #[cfg(target_arch = "wasm32")]
    {
        host::stack_output(stack, output)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        testing::stack_output(stack, output)
    }
}

/// Sends panic messages to the host's log: on wasm32-unknown-unknown a panic prints nothing,
/// and the host only sees `unreachable`. Called by every export [`export_plugin!`] generates.
pub fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| log(Level::Error, &info.to_string())));
    });
}

/// Generates a plugin's bindings, in a module `bindings`, from its world: `world` is the WIT
/// text of a world including `heet:plugin/base@0.1.2` and exporting the hooks the plugin
/// implements; `wit` is the folder holding `heet.wit`, relative to the plugin's Cargo.toml.
/// The WIT records come from this SDK, so every plugin shares them.
///
/// ```ignore
/// heet_sdk::bindings!(
///     world: "package my:plugin; world plugin {
///         include heet:plugin/base@0.1.2;
///         export heet:plugin/naming@0.1.2;
///     }",
///     wit: "wit",
/// );
/// ```
#[macro_export]
macro_rules! bindings {
    (world: $world:literal, wit: $wit:literal $(,)?) => {
        mod bindings {
            wit_bindgen::generate!({
                inline: $world,
                path: $wit,
                with: {
                    "heet:plugin/types@0.1.2": heet_sdk::types,
                    "heet:plugin/host@0.1.2": heet_sdk::host,
                },
            });
        }
    };
}

/// Implements the generated export traits of `$bindings` for `$ty` by delegating to the SDK
/// traits, then exports `$ty`. The hook list must match the exports of the plugin's world;
/// a mismatch is a compile error.
#[macro_export]
macro_rules! export_plugin {
    ($ty:ident, $bindings:ident, [$($hook:ident),+ $(,)?]) => {
        $( $crate::__export_hook!($hook, $ty, $bindings); )+
        $bindings::export!($ty with_types_in $bindings);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __export_hook {
    (configure, $ty:ident, $b:ident) => {
        impl $b::exports::heet::plugin::configure::Guest for $ty {
            fn configure(config_json: String) -> Result<(), Vec<String>> {
                $crate::install_panic_hook();
                <$ty as $crate::Configure>::configure(&config_json)
            }
        }
    };
    (naming, $ty:ident, $b:ident) => {
        impl $b::exports::heet::plugin::naming::Guest for $ty {
            fn name(ctx: $crate::InstanceContext, current: String) -> Option<String> {
                $crate::install_panic_hook();
                <$ty as $crate::Naming>::name(&ctx, &current)
            }
        }
    };
    (tags, $ty:ident, $b:ident) => {
        impl $b::exports::heet::plugin::tags::Guest for $ty {
            fn tags(
                ctx: $crate::InstanceContext,
                current: Vec<$crate::Tag>,
            ) -> Option<Vec<$crate::Tag>> {
                $crate::install_panic_hook();
                <$ty as $crate::Tags>::tags(&ctx, &current)
            }
        }
    };
    (sizing, $ty:ident, $b:ident) => {
        impl $b::exports::heet::plugin::sizing::Guest for $ty {
            fn size(
                ctx: $crate::RoleContext,
                current: $crate::RoleSize,
            ) -> Option<$crate::RoleSize> {
                $crate::install_panic_hook();
                <$ty as $crate::Sizing>::size(&ctx, &current)
            }
        }
    };
    (cnames, $ty:ident, $b:ident) => {
        impl $b::exports::heet::plugin::cnames::Guest for $ty {
            fn cnames(ctx: $crate::InstanceContext, current: Vec<String>) -> Option<Vec<String>> {
                $crate::install_panic_hook();
                <$ty as $crate::Cnames>::cnames(&ctx, &current)
            }
        }
    };
    (user_data, $ty:ident, $b:ident) => {
        impl $b::exports::heet::plugin::user_data::Guest for $ty {
            fn user_data(ctx: $crate::InstanceContext, current: String) -> Option<String> {
                $crate::install_panic_hook();
                <$ty as $crate::UserData>::user_data(&ctx, &current)
            }
        }
    };
    (guard, $ty:ident, $b:ident) => {
        impl $b::exports::heet::plugin::guard::Guest for $ty {
            fn validate(state: $crate::DesiredState) -> Vec<$crate::Violation> {
                $crate::install_panic_hook();
                <$ty as $crate::Guard>::validate(&state)
            }
        }
    };
    (tasks, $ty:ident, $b:ident) => {
        impl $b::exports::heet::plugin::tasks::Guest for $ty {
            fn shape(
                ctx: $crate::TaskContext,
                current: $crate::TaskScript,
            ) -> Option<$crate::TaskScript> {
                $crate::install_panic_hook();
                <$ty as $crate::Tasks>::shape(&ctx, &current)
            }
        }
    };
}
