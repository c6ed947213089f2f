//! The `pollcast` binary: parse settings, start logging, serve until
//! SIGTERM or Ctrl-C; or mint a token with `pollcast token`.

use std::process::ExitCode;

use clap::Parser;
use pollcast::auth::{expiry_in, Claims, TokenKeys};
use pollcast::config::{Cli, Command, ServeConfig, TokenArgs};
use pollcast::domain::topic::{is_tenant_name, Selector};
use pollcast::Server;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Some(Command::Token(args)) => mint(args),
        None => serve(cli.serve).await,
    }
}

fn mint(args: TokenArgs) -> ExitCode {
    for selector in args.publish.iter().chain(&args.subscribe) {
        if let Err(error) = Selector::parse(selector) {
            eprintln!("error: selector {selector:?}: {error}");
            return ExitCode::from(2);
        }
    }
    if let Some(tenant) = args.tenant.as_deref().filter(|t| !is_tenant_name(t)) {
        eprintln!("error: tenant {tenant:?}: 1 to 64 of [a-z0-9_.-]");
        return ExitCode::from(2);
    }
    let claims = Claims {
        sub: args.sub,
        exp: expiry_in(args.ttl),
        iat: Some(pollcast::auth::unix_now()),
        jti: Some(args.jti.unwrap_or_else(|| uuid::Uuid::new_v4().to_string())),
        publish: args.publish,
        subscribe: args.subscribe,
        tenant: args.tenant,
        ..Claims::default()
    };
    println!(
        "{}",
        TokenKeys::new(args.token_secret.expose().as_bytes()).mint(&claims)
    );
    ExitCode::SUCCESS
}

async fn serve(config: ServeConfig) -> ExitCode {
    let listener = match listen(config.listen) {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("error: cannot listen on {} (--listen): {error}", config.listen);
            return ExitCode::FAILURE;
        }
    };
    let server = match Server::start(&config, listener).await {
        Ok(server) => server,
        Err(error) => {
            eprintln!("error: cannot start: {error}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(addr = %server.addr(), "pollcast listening");
    match &config.public_url {
        Some(url) => tracing::info!("the audience joins at {}/join", url.as_str()),
        None => tracing::info!(
            "no --public-url: join links use the address in the presenter's browser; \
             set it to the address the audience can reach (see \"Running a real meeting\" in the README)"
        ),
    }
    wait_for_signal().await;
    tracing::info!("shutting down: ending streams");
    server.stop().await;
    ExitCode::SUCCESS
}

/// A listener with a deep accept backlog: a reconnect storm of thousands of
/// EventSource clients must not overflow the kernel's default of 128.
fn listen(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(8192)
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
