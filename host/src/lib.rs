//! heet: provision AWS infrastructure per project and environment, with business rules as
//! sandboxed WebAssembly plugins. See ARCHITECTURE.md for the map.

pub mod apply;
pub mod cli;
pub mod cloud;
pub mod commands;
pub mod definition;
pub mod desired;
pub mod diagnostic;
pub mod graph;
pub mod iam;
pub mod init;
pub mod kinds;
pub mod launch;
pub mod ledger;
pub mod namespace;
pub mod ops;
pub mod plan;
pub mod plugins;
pub mod progress;
pub mod report;
pub mod rolling;
pub mod run;
pub mod schema;
pub mod style;
pub mod tasks;
pub mod text;
pub mod validate;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use cli::{Cli, Command, ConfigCommand, KeysCommand, PluginsCommand};
use commands::Outcome;

/// Exit codes, documented in `heet --help` and docs/cli.md.
pub mod exit {
    pub const OK: u8 = 0;
    pub const FAILURE: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const POLICY: u8 = 3;
    /// Another run holds the environment's lock.
    pub const LOCKED: u8 = 4;
    /// `plan --detailed-exitcode` with changes.
    pub const CHANGES: u8 = 2;
}

/// The exit code for an error, from the first typed cause in its chain.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if cause.is::<definition::DefinitionError>()
            || cause.is::<commands::UsageError>()
            || cause.is::<plugins::lock::LockError>()
            || cause.is::<plugins::lock::TrustError>()
            || cause.is::<plugins::harness::FixtureError>()
            || cause.is::<cloud::SetupError>()
        {
            return exit::USAGE;
        }
        if cause.is::<cloud::EnvLocked>() {
            return exit::LOCKED;
        }
        if cause.is::<desired::PolicyDenied>() {
            return exit::POLICY;
        }
        // `DesiredError` is transparent: its source chain skips the `PolicyDenied` it wraps.
        if let Some(desired::DesiredError::Policy(_)) = cause.downcast_ref() {
            return exit::POLICY;
        }
    }
    exit::FAILURE
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.global.verbose, cli.global.quiet);
    match run(cli) {
        Ok(Outcome::Done) => ExitCode::from(exit::OK),
        Ok(Outcome::Changes) => ExitCode::from(exit::CHANGES),
        Err(err) => {
            eprintln!("error: {err:#}");
            // A definition error's line, with a caret under the place and a help line.
            let place = err
                .chain()
                .find_map(|c| c.downcast_ref::<definition::DefinitionError>());
            if let Some(snippet) = place.and_then(|d| diagnostic::snippet(d, style::stderr_color()))
            {
                eprint!("{snippet}");
            }
            ExitCode::from(exit_code(&err))
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<Outcome> {
    let global = &cli.global;
    let progress = progress::Progress::new(global.quiet);
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
    };
    match &cli.command {
        Command::Init { name } => runtime()?.block_on(commands::init(global, name.as_deref())),
        Command::Plan {
            env,
            detailed_exitcode,
            roles,
        } => runtime()?.block_on(commands::plan(global, env, *detailed_exitcode, roles)),
        Command::Up {
            env,
            dry_run: true,
            roles,
            ..
        } => runtime()?.block_on(commands::plan(global, env, false, roles)),
        Command::Up {
            env,
            yes,
            keep_failed,
            roles,
            ..
        } => runtime()?.block_on(commands::up(
            global,
            env,
            *yes,
            *keep_failed,
            roles,
            &progress,
        )),
        Command::Down { env, yes, roles } => {
            runtime()?.block_on(commands::down(global, env, *yes, roles, &progress))
        }
        Command::Graph { env, format, live } => {
            runtime()?.block_on(commands::graph(global, env, *format, *live))
        }
        Command::Status { env } => runtime()?.block_on(commands::status(global, env)),
        Command::Unlock { env, yes } => runtime()?.block_on(commands::unlock(global, env, *yes)),
        Command::Run {
            scenario,
            task,
            env,
        } => {
            let selection = match (scenario, task) {
                (Some(s), _) => tasks::Selection::Scenario(s.clone()),
                (None, Some(t)) => tasks::Selection::Task(t.clone()),
                (None, None) => unreachable!("clap requires one"),
            };
            runtime()?.block_on(run::run(global, env, &selection, &progress))
        }
        Command::Config(ConfigCommand::List { env, reveal }) => {
            runtime()?.block_on(ops::config_list(global, env, *reveal))
        }
        Command::Config(ConfigCommand::Get { key, env, reveal }) => {
            runtime()?.block_on(ops::config_get(global, env, key, *reveal))
        }
        Command::Config(ConfigCommand::Set {
            key,
            value,
            env,
            secret,
        }) => runtime()?.block_on(ops::config_set(global, env, key, value.as_deref(), *secret)),
        Command::Config(ConfigCommand::Unset { key, env }) => {
            runtime()?.block_on(ops::config_unset(global, env, key))
        }
        Command::Keys(KeysCommand::Get { role, env, reveal }) => {
            runtime()?.block_on(ops::key_get(global, env, role, *reveal))
        }
        Command::Inventory { env, host, .. } => {
            runtime()?.block_on(ops::inventory(global, env, host.as_deref()))
        }
        Command::Hosts { env, role } => {
            runtime()?.block_on(ops::hosts(global, env, role.as_deref()))
        }
        Command::IamPolicy { trust: None, .. } => {
            let def = definition::Definition::load(&global.file)?;
            commands::emit(global, &iam::policy(&def))?;
            Ok(Outcome::Done)
        }
        Command::IamPolicy {
            trust: Some(env),
            principal,
        } => runtime()?.block_on(commands::trust_policy(global, env, principal.as_deref())),
        Command::Plugins(PluginsCommand::List) => commands::plugins_list(global),
        Command::Plugins(PluginsCommand::Lock) => commands::plugins_lock(global),
        Command::Plugins(PluginsCommand::Add {
            source,
            name,
            grant,
        }) => runtime()?.block_on(commands::plugins_add(
            global,
            source,
            name.as_deref(),
            *grant,
        )),
        Command::Plugins(PluginsCommand::Update { name, yes }) => {
            runtime()?.block_on(commands::plugins_update(global, name.as_deref(), *yes))
        }
        Command::Plugins(PluginsCommand::Remove { name }) => commands::plugins_remove(global, name),
        Command::Plugins(PluginsCommand::Publish {
            file,
            target,
            key,
            password_stdin,
        }) => runtime()?.block_on(commands::plugins_publish(
            global,
            file,
            target,
            key,
            *password_stdin,
        )),
        Command::Plugins(PluginsCommand::Keygen {
            out,
            password_stdin,
        }) => commands::plugins_keygen(global, out, *password_stdin),
        Command::Plugins(PluginsCommand::New { name, path, lang }) => {
            commands::plugins_new(global, name, *lang, path.as_deref())
        }
        Command::Plugins(PluginsCommand::Test {
            fixtures,
            component,
            manifest_path,
        }) => commands::plugins_test(
            global,
            fixtures,
            component.as_deref(),
            manifest_path.as_deref(),
        ),
        Command::Plugins(PluginsCommand::Build {
            manifest_path,
            out,
            packages,
        }) => commands::plugins_build(
            global,
            &plugins::build::BuildRequest {
                manifest_path: manifest_path.clone(),
                packages: packages.clone(),
                out_dir: out.clone(),
            },
        ),
        Command::Completions { shell } => {
            clap_complete::generate(*shell, &mut Cli::command(), "heet", &mut std::io::stdout());
            Ok(Outcome::Done)
        }
        Command::Schema => {
            let schema = serde_json::to_string_pretty(&schema::schema())?;
            println!("{schema}");
            Ok(Outcome::Done)
        }
    }
}

fn init_logging(verbose: u8, quiet: bool) {
    // aws-config's warnings about each credential source it tried (IMDS, mostly) say nothing
    // a missing-credentials error does not, in one line: they show from -v on.
    let default = match (quiet, verbose) {
        (true, _) => "warn,aws_config=error",
        (false, 0) => "warn,heet=info,aws_config=error",
        (false, 1) => "info,heet=debug",
        (false, _) => "debug,heet=trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("HEET_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .with_target(false)
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn exit_codes_follow_the_first_typed_cause() {
        let definition = anyhow::Error::new(definition::DefinitionError {
            file: PathBuf::from("heet.toml"),
            at: Some((1, 1)),
            message: "bad".into(),
        });
        assert_eq!(exit_code(&definition), exit::USAGE);
        let usage = anyhow::Error::new(commands::UsageError("no".into())).context("while asking");
        assert_eq!(exit_code(&usage), exit::USAGE);
        let denied = anyhow::Error::new(desired::DesiredError::Policy(desired::PolicyDenied {
            violations: Vec::new(),
        }));
        assert_eq!(exit_code(&denied), exit::POLICY);
        let plugin = anyhow::Error::new(desired::DesiredError::Plugin(plugins::PluginError {
            plugin: "p".into(),
            hook: plugins::Hook::Naming,
            reason: "trapped".into(),
        }));
        assert_eq!(exit_code(&plugin), exit::FAILURE);
        assert_eq!(exit_code(&anyhow::anyhow!("aws said no")), exit::FAILURE);
        let locked = anyhow::Error::new(cloud::EnvLocked {
            project: "shop".into(),
            env: "staging".into(),
            holder: cloud::LockHolder::this_process("up", "111111111111"),
        })
        .context("while taking the lock");
        assert_eq!(exit_code(&locked), exit::LOCKED);
    }
}
