//! Command-line interface: clap definitions, shared by the binary and completions.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "heet",
    version,
    about = "Provision AWS infrastructure per project and environment, with business rules as WebAssembly plugins",
    after_help = "Exit codes: 0 ok, 1 runtime or AWS error, 2 usage, definition or heet.lock error, 3 policy denied, \
                  4 environment locked by another run; \
                  `plan --detailed-exitcode` exits 2 when there are changes."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// The definition file; relative paths in it resolve from its folder
    #[arg(
        short = 'f',
        long = "file",
        global = true,
        env = "HEET_FILE",
        default_value = "heet.toml"
    )]
    pub file: PathBuf,
    /// AWS endpoint, e.g. a local emulator
    #[arg(long, global = true, env = "AWS_ENDPOINT_URL")]
    pub endpoint_url: Option<String>,
    /// AWS profile from the shared config files (else the environment's `profile`, else
    /// AWS_PROFILE)
    #[arg(long, global = true)]
    pub profile: Option<String>,
    /// AWS region (else the environment's `region`, else the AWS config chain, else
    /// project.region)
    #[arg(long, global = true)]
    pub region: Option<String>,
    /// Output format of the command's result (logs always go to stderr)
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Print the AWS calls made to stderr (always included in --output json)
    #[arg(long, global = true)]
    pub stats: bool,
    /// More log output (-v debug, -vv trace)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only warnings and errors on stderr
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// What `heet graph` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GraphFormat {
    Dot,
    Mermaid,
    Svg,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a project here: a commented heet.toml (name from the folder, region from your
    /// AWS config) and the naming plugin's source in plugins/naming; never overwrites
    Init {
        /// The project name [default: the folder's name, made a valid one]
        #[arg(long)]
        name: Option<String>,
    },
    /// Show what `up` would change, without changing anything
    Plan {
        #[arg(short, long)]
        env: String,
        /// Exit 2 when there are changes, 0 when there are none (as Terraform)
        #[arg(long)]
        detailed_exitcode: bool,
        /// Only this role's changes, and what it needs made (repeatable)
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
    },
    /// Make AWS match the definition for an environment
    Up {
        #[arg(short, long)]
        env: String,
        /// Do not ask before terminating or replacing instances
        #[arg(short, long)]
        yes: bool,
        /// Plan only; the same as `heet plan`
        #[arg(long)]
        dry_run: bool,
        /// Keep the successors of a rollout batch that did not become healthy, for
        /// debugging (they are terminated otherwise; the next `up` waits for them again)
        #[arg(long)]
        keep_failed: bool,
        /// Only this role's changes, and what it needs made (repeatable)
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
    },
    /// Terminate everything heet created for the project in an environment
    Down {
        #[arg(short, long)]
        env: String,
        /// Do not ask for confirmation (required when stdin is not a terminal)
        #[arg(short, long)]
        yes: bool,
        /// Only this role's instances, and their names and Elastic IPs (repeatable)
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
    },
    /// Draw an environment: its roles, the ports each admits from networks and other roles,
    /// and the names pointing at them (from the definition and plugins, as plan makes it)
    Graph {
        #[arg(short, long)]
        env: String,
        /// dot (Graphviz), mermaid (GitHub Markdown) or svg (drawn by heet, no Graphviz)
        #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
        format: GraphFormat,
        /// Draw what runs (heet's own instances, its groups' rules, its records) instead
        #[arg(long)]
        live: bool,
    },
    /// Compare what runs with the definition and plugins: missing, unexpected, changed,
    /// records pointing at dead instances (exit 2 when there is drift)
    Status {
        #[arg(short, long)]
        env: String,
    },
    /// Break an environment's lock left by a run that died (shows who held it first)
    Unlock {
        #[arg(short, long)]
        env: String,
        /// Do not ask for confirmation (required when stdin is not a terminal)
        #[arg(short, long)]
        yes: bool,
    },
    /// Run a scenario's steps (or one task) on the environment's instances through SSM Run
    /// Command, each step on every instance before the next; stops at the first failed step
    /// (exit 1)
    #[command(group(clap::ArgGroup::new("what").required(true).args(["scenario", "task"])))]
    Run {
        /// A scenario of the definition's `[scenarios]`
        scenario: Option<String>,
        /// One task instead, as ROLE.TASK
        #[arg(long)]
        task: Option<String>,
        #[arg(short, long)]
        env: String,
    },
    /// Environment variables and secrets of the app, in SSM Parameter Store
    #[command(subcommand)]
    Config(ConfigCommand),
    /// The key pairs heet makes per role (`key_pair = "create"`)
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Ansible dynamic inventory of an environment: groups per role and per env--role
    Inventory {
        #[arg(short, long)]
        env: String,
        /// Accepted for Ansible's script inventory protocol (the default)
        #[arg(long, hide = true)]
        list: bool,
        /// Ansible's per-host call: prints `{}`, as every host's vars are in `_meta`
        #[arg(long, hide = true)]
        host: Option<String>,
    },
    /// The addresses of an environment's instances, one per line
    Hosts {
        #[arg(short, long)]
        env: String,
        /// Only this role's instances
        #[arg(short, long)]
        role: Option<String>,
    },
    /// Print the least-privilege IAM policy heet needs for this definition
    IamPolicy {
        /// Print instead the trust policy of this environment's `assume_role`: who may
        /// assume it (the account of the credentials in use, or --principal)
        #[arg(long, value_name = "ENV")]
        trust: Option<String>,
        /// The account whose principals may assume the role (default: the account of the
        /// credentials in use, asked of STS)
        #[arg(long, value_name = "ACCOUNT", requires = "trust")]
        principal: Option<String>,
    },
    /// Build, inspect and manage plugins
    #[command(subcommand)]
    Plugins(PluginsCommand),
    /// Print shell completions
    Completions { shell: clap_complete::Shell },
    /// Print the JSON Schema of heet.toml, for editors (Taplo, Even Better TOML)
    Schema,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// List the keys of an environment; secrets show no value unless --reveal
    List {
        #[arg(short, long)]
        env: String,
        /// Print secrets' values too
        #[arg(long)]
        reveal: bool,
    },
    /// Print one key's value; a secret's only with --reveal
    Get {
        key: String,
        #[arg(short, long)]
        env: String,
        #[arg(long)]
        reveal: bool,
    },
    /// Set a key; without VALUE the value is read from stdin (keeps secrets out of shell history)
    Set {
        key: String,
        value: Option<String>,
        #[arg(short, long)]
        env: String,
        /// Store it as a SecureString
        #[arg(long)]
        secret: bool,
    },
    /// Remove a key
    Unset {
        key: String,
        #[arg(short, long)]
        env: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Say where a role's private key is kept; print it (for ssh) only with --reveal
    Get {
        role: String,
        #[arg(short, long)]
        env: String,
        /// Print the private key itself
        #[arg(long)]
        reveal: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum PluginsCommand {
    /// List the plugins of the definition: file, sha256, hooks, WIT version, lock state
    List,
    /// Pin every plugin of the plugin folder in heet.lock, after reviewing them
    Lock,
    /// Add a plugin from an OCI registry: pulled, checked against its digest and the trust
    /// policy, written into the plugin folder and pinned in heet.lock
    Add {
        /// oci://REGISTRY/NAMESPACE/NAME:TAG
        source: String,
        /// Its name in the plugin folder [default: the repository's last part]
        #[arg(long = "as", value_name = "NAME")]
        name: Option<String>,
        /// Also write the grant allowing exactly what it exports into heet.toml
        #[arg(long)]
        grant: bool,
    },
    /// Re-resolve the tags of plugins added from a registry; shows what changes before it writes
    Update {
        /// Only this plugin
        name: Option<String>,
        /// Write without asking (needed when stdin is not a terminal)
        #[arg(long)]
        yes: bool,
    },
    /// Delete a plugin from the plugin folder and heet.lock
    Remove { name: String },
    /// Push a component to an OCI registry in the Wasm OCI layout, signed with a minisign key
    Publish {
        /// The component (.wasm)
        file: PathBuf,
        /// oci://REGISTRY/NAMESPACE/NAME:TAG
        target: String,
        /// The secret key (BASE.key from `heet plugins keygen`)
        #[arg(long)]
        key: PathBuf,
        /// Read the key's password from stdin
        #[arg(long)]
        password_stdin: bool,
    },
    /// Make a minisign key pair for signing plugins: BASE.key (secret, 0600) and BASE.pub
    Keygen {
        #[arg(long, value_name = "BASE")]
        out: PathBuf,
        /// Protect the secret key with a password read from stdin
        #[arg(long)]
        password_stdin: bool,
    },
    /// Create a plugin (a policy plugin to start from) that builds and passes its tests
    New {
        /// Plugin (and crate) name, e.g. `no-big-boxes`
        name: String,
        /// Folder to create [default: ./NAME]
        #[arg(long)]
        path: Option<PathBuf>,
        /// The language to write it in
        #[arg(long, value_enum, default_value_t = crate::plugins::scaffold::Lang::Rust)]
        lang: crate::plugins::scaffold::Lang,
    },
    /// Build a plugin and run the cases of its fixtures (tests/*.toml) in the real sandbox
    Test {
        /// Fixture files [default: tests/*.toml of the plugin's folder]
        fixtures: Vec<PathBuf>,
        /// Test this component instead of building the plugin
        #[arg(long)]
        component: Option<PathBuf>,
        /// The plugin's Cargo.toml or heet-plugin.toml [default: the one in this folder]
        #[arg(long)]
        manifest_path: Option<PathBuf>,
    },
    /// Build plugins into components: the plugin crates of a cargo workspace, or the
    /// JavaScript or Python plugin of a folder with a heet-plugin.toml
    Build {
        /// Cargo.toml of the workspace holding the plugin crates, or a plugin's heet-plugin.toml
        #[arg(long)]
        manifest_path: Option<PathBuf>,
        /// Folder for the built components [default: <target dir>/heet-plugins]
        #[arg(long)]
        out: Option<PathBuf>,
        /// Build only these crates (fixtures must be named)
        #[arg(short, long = "package")]
        packages: Vec<String>,
    },
}
