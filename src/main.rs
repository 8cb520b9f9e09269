//! The `xelon-gateway` command line: `serve`, `demo`, and admin commands. No logic lives here:
//! each command loads the config, calls the library, and prints its result.

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use xelon_gateway::admin::{self, NewUser};
use xelon_gateway::auth::password::Passwords;
use xelon_gateway::clock::{Clock, SharedClock, SystemClock};
use xelon_gateway::config::{Config, DEFAULT_CONFIG_PATH};
use xelon_gateway::metrics::Metrics;

#[derive(Parser)]
#[command(
    name = "xelon-gateway",
    version,
    about = "Authentication gateway for the Xelon HQ platform API"
)]
struct Cli {
    /// Config file (TOML). Default: config/gateway.toml if it exists.
    #[arg(long, global = true, env = "XGW_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve,
    /// Run the gateway on a fresh embedded store with a demo upstream and a demo login.
    Demo,
    /// Organizations.
    Org {
        #[command(subcommand)]
        command: OrgCommand,
    },
    /// Users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
}

#[derive(Subcommand)]
enum OrgCommand {
    /// Create an organization; prints it as one JSON line.
    Create {
        #[arg(long)]
        name: String,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user in an organization; prints it as one JSON line.
    Create {
        #[arg(long)]
        org: String,
        #[arg(long)]
        email: String,
        #[arg(long)]
        first_name: String,
        #[arg(long)]
        last_name: String,
        /// Make the user an administrator of the organization.
        #[arg(long)]
        admin: bool,
        /// A permission such as allowManageServiceTokens (repeatable).
        #[arg(long = "permission")]
        permissions: Vec<String>,
        /// Read the password from standard input (required: never on the command line).
        #[arg(long)]
        password_stdin: bool,
    },
}

fn load_config(path: Option<PathBuf>) -> anyhow::Result<Config> {
    let required = path.is_some();
    let path = path.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH));
    Ok(Config::load_from_env(&path, required)?)
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).try_init();
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn main() {
    init_tracing();
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve => {
            let config = load_config(cli.config)?;
            serve(&config)
        }
        Command::Demo => demo(cli.config),
        Command::Org {
            command: OrgCommand::Create { name },
        } => {
            let config = load_config(cli.config)?;
            let store = xelon_gateway::open_store(&config, Arc::new(Metrics::new()))?;
            let org = runtime()?.block_on(admin::create_org(&store, &name, SystemClock.now()))?;
            println!("{}", admin::org_json(&org));
            Ok(())
        }
        Command::User {
            command:
                UserCommand::Create {
                    org,
                    email,
                    first_name,
                    last_name,
                    admin,
                    permissions,
                    password_stdin,
                },
        } => {
            if !password_stdin {
                bail!("pass --password-stdin and the password on standard input");
            }
            let mut password = String::new();
            std::io::stdin()
                .take(4096)
                .read_to_string(&mut password)
                .context("reading the password from standard input")?;
            let password = password.trim_end_matches(['\r', '\n']);
            let config = load_config(cli.config)?;
            let passwords = Passwords::new(
                config.login.argon2_memory_kib,
                config.login.argon2_iterations,
                config.login.argon2_parallelism,
            )?;
            let store = xelon_gateway::open_store(&config, Arc::new(Metrics::new()))?;
            let new = NewUser {
                org_id: &org,
                email: &email,
                first_name: &first_name,
                last_name: &last_name,
                admin,
                permissions: &permissions,
                password,
            };
            let user = runtime()?.block_on(admin::create_user(
                &store,
                &passwords,
                new,
                SystemClock.now(),
            ))?;
            println!("{}", admin::user_json(&user));
            Ok(())
        }
    }
}

fn serve(config: &Config) -> anyhow::Result<()> {
    let clock: SharedClock = Arc::new(SystemClock);
    let gateway = xelon_gateway::build(config, clock)?;
    tracing::info!(
        listen = %config.server.listen,
        internal = %config.server.internal_listen,
        store = gateway.handles.store.backend_name(),
        upstream = %config.upstream.url,
        "xelon-gateway starting"
    );
    gateway.server.run_forever()
}

/// A one-minute tour: fresh embedded store, echo upstream, one org, one admin user.
fn demo(config_path: Option<PathBuf>) -> anyhow::Result<()> {
    let mut config = match config_path {
        Some(p) => Config::load_from_env(&p, true)?,
        None => Config::default(),
    };
    let db = PathBuf::from("data/demo/gateway.redb");
    let _ = std::fs::remove_file(&db);
    config.store.url = format!("embedded:{}", db.display());
    config.session.cookie_secure = false;

    let up = config.upstream().map_err(anyhow::Error::msg)?;
    let listener = std::net::TcpListener::bind((up.host.as_str(), up.port)).with_context(|| {
        format!(
            "the demo upstream needs {}:{} (upstream.url); free it or set XGW_UPSTREAM_URL",
            up.host, up.port
        )
    })?;
    xelon_gateway::demo::spawn_echo_upstream(listener)?;

    let clock: SharedClock = Arc::new(SystemClock);
    let gateway = xelon_gateway::build(&config, clock.clone())?;
    let store = gateway.handles.store.clone();
    // Upper, lower and digit guaranteed, so it always passes the complexity rules.
    let password = format!(
        "Demo-{}-42",
        &xelon_gateway::auth::secret::new_csrf_token()[..12]
    );
    let passwords = Passwords::new(
        config.login.argon2_memory_kib,
        config.login.argon2_iterations,
        config.login.argon2_parallelism,
    )?;
    let email = "demo@example.com";
    runtime()?.block_on(async {
        let org = admin::create_org(&store, "Demo Organization", clock.now()).await?;
        admin::create_user(
            &store,
            &passwords,
            NewUser {
                org_id: &org.id,
                email,
                first_name: "Dana",
                last_name: "Demo",
                admin: true,
                permissions: &["allowManageServiceTokens".to_string()],
                password: &password,
            },
            clock.now(),
        )
        .await?;
        anyhow::Ok(())
    })?;
    println!();
    println!("  xelon-gateway demo is running");
    println!(
        "  open     http://{}/            (redirects to the login page)",
        config.server.listen
    );
    println!("  sign in  {email}  /  {password}");
    println!(
        "  account  http://{}/auth/account      (My Account; Manage My Organization at /auth/org)",
        config.server.listen
    );
    println!(
        "  metrics  http://{}/metrics",
        config.server.internal_listen
    );
    println!(
        "  the demo upstream at {} echoes the identity headers it receives",
        config.upstream.url
    );
    println!("  Ctrl-C to stop");
    println!();
    gateway.server.run_forever()
}
