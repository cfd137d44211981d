use std::path::PathBuf;

use clap::{Parser, Subcommand};
use conduit::{config::Config, service::Services};
use tracing_subscriber::EnvFilter;

/// A Matrix homeserver with an embedded database.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Path to conduit.toml (default: $CONDUIT_CONFIG, then ./conduit.toml).
    #[arg(short, long)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Manage local accounts without the HTTP API (e.g. the first admin).
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// The full-text search index (docs/search.md).
    Search {
        #[command(subcommand)]
        action: SearchAction,
    },
}

#[derive(Subcommand)]
enum SearchAction {
    /// Empty the index and index every stored event again; stop the server first.
    Rebuild,
}

#[derive(Subcommand)]
enum UserAction {
    /// Create a user; prints the password if none is given.
    Create {
        localpart: String,
        #[arg(long)]
        password: Option<String>,
        /// Make the user a server admin (may use the `/_synapse/admin` API).
        #[arg(long)]
        admin: bool,
    },
}

/// glibc raises its mmap threshold to the size of the largest block freed, after which
/// big short-lived buffers (argon2's 7 MiB per password hash) come from the heap and stay
/// resident: measured, 7 MiB more memory per login, for good. A fixed threshold keeps
/// them mmapped, so they go back to the system when freed.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

fn main() -> std::process::ExitCode {
    tune_allocator();
    let args = Args::parse();
    let config = match Config::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("invalid configuration: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log));
    tracing_subscriber::fmt().with_env_filter(filter).init();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(async move {
        match args.command {
            None => run(config).await,
            Some(Command::User {
                action:
                    UserAction::Create {
                        localpart,
                        password,
                        admin,
                    },
            }) => create_user(config, &localpart, password, admin).await,
            Some(Command::Search {
                action: SearchAction::Rebuild,
            }) => rebuild_search(config),
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::net::SocketAddr::new(config.address, config.port);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(server_name = %config.server_name, %addr, "conduit listening");
    let server = conduit::server::start(config, listener).await?;
    shutdown_signal().await;
    tracing::info!("shutting down");
    server.stop().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn create_user(
    config: Config,
    localpart: &str,
    password: Option<String>,
    admin: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let services = Services::build(config)?;
    let user_id = ruma::UserId::parse_with_server_name(
        localpart.to_lowercase(),
        services.globals.server_name(),
    )?;
    if services.users.exists(&user_id)? {
        return Err(format!("{user_id} already exists").into());
    }
    let password = password.unwrap_or_else(|| conduit::service::globals::random_string(16));
    services
        .users
        .create(&user_id, Some(password.clone()))
        .await?;
    if admin {
        services.users.update(&user_id, |u| u.admin = true)?;
    }
    services.db.flush()?;
    let role = if admin { " (server admin)" } else { "" };
    println!("created {user_id}{role} with password {password}");
    Ok(())
}

fn rebuild_search(config: Config) -> Result<(), Box<dyn std::error::Error>> {
    let services = Services::build(config)?;
    let indexed = services.search.rebuild(&services)?;
    println!("search index rebuilt: {indexed} events indexed");
    Ok(())
}
