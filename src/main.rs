//! The `switchboard` command: serve the API, and manage portals, tokens and the ignore list.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use switchboard::callerid::normalize;
use switchboard::http::extract::{hash_token, new_token};
use switchboard::state::{AppState, Config};
use switchboard::store::{self, AssociateMode, Portal};
use switchboard::{demo, server};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DEFAULT_DB: &str = "./switchboard.db";

fn long_version() -> &'static str {
    Box::leak(
        format!(
            "{} (phone metadata {}, {})",
            env!("CARGO_PKG_VERSION"),
            normalize::METADATA_VERSION,
            normalize::PARSER_VERSION
        )
        .into_boxed_str(),
    )
}

#[derive(Parser)]
#[command(name = "switchboard", version = long_version(), about = "A self-hostable calling backend that speaks HubSpot's calling API")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API.
    Serve {
        #[arg(long, env = "SWITCHBOARD_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        #[arg(long, env = "SWITCHBOARD_DATABASE_URL", default_value = DEFAULT_DB)]
        db: String,
        /// Seed a demo portal when the database is empty, and print its token.
        #[arg(long)]
        demo: bool,
        /// Most caller-ID matches one inbound call returns.
        #[arg(long, env = "SWITCHBOARD_MATCH_CAP", default_value_t = 100)]
        match_cap: usize,
    },
    /// Manage portals (HubSpot accounts).
    Portal {
        #[command(subcommand)]
        command: PortalCommand,
    },
    /// Manage access tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Manage a portal's ignore list: numbers that never match.
    Ignore {
        #[command(subcommand)]
        command: IgnoreCommand,
    },
    /// Bulk-load contacts or companies from a CSV file (HubSpot export columns or --map).
    Import {
        /// contacts or companies
        kind: String,
        /// The portal (HubSpot account id) the records go to; see `portal create`.
        #[arg(long)]
        portal: i64,
        /// The CSV file. Its header row names HubSpot's export columns ("First Name", "Phone
        /// Number", ...) or internal property names; other columns are ignored and listed.
        /// A re-run of the same file resumes after the last committed batch.
        file: std::path::PathBuf,
        /// column=property pairs, comma-separated, e.g. "Cell=mobilephone,Tel=phone"
        #[arg(long, default_value = "")]
        map: String,
        /// Where rejected rows go (default: FILE.rejects.csv)
        #[arg(long)]
        reject_file: Option<std::path::PathBuf>,
        /// Rows per transaction (and per checkpoint). Larger batches import faster, but hold
        /// the database's write lock longer: a server on the same file waits that long to log
        /// a call.
        #[arg(long, default_value_t = 20_000)]
        batch_size: usize,
        /// No progress bar on stderr.
        #[arg(long)]
        quiet: bool,
        /// auto, keep or defer: defer leaves the email or domain index out of the load
        /// and builds it after, much faster for a large file; auto does so when the file is
        /// large against the database and no server is running on it.
        #[arg(long, default_value = "auto")]
        indexes: switchboard::import::IndexMode,
        #[arg(long, env = "SWITCHBOARD_DATABASE_URL", default_value = DEFAULT_DB)]
        db: String,
    },
    /// Check stored data before switching telephony over.
    Doctor {
        #[command(subcommand)]
        command: DoctorCommand,
    },
}

#[derive(Subcommand)]
enum DoctorCommand {
    /// Unparsable numbers, numbers whose region was guessed, numbers shared by many records.
    Phones {
        #[arg(long)]
        portal: i64,
        #[arg(long, env = "SWITCHBOARD_DATABASE_URL", default_value = DEFAULT_DB)]
        db: String,
    },
}

#[derive(Subcommand)]
enum PortalCommand {
    /// Create a portal.
    Create {
        #[arg(long)]
        id: i64,
        /// Region for numbers typed without a country code.
        #[arg(long, default_value = "US")]
        default_region: String,
        #[arg(long, env = "SWITCHBOARD_DATABASE_URL", default_value = DEFAULT_DB)]
        db: String,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token; it is printed alone on the last line.
    Create {
        #[arg(long)]
        portal: i64,
        /// Comma-separated scopes, e.g. crm.objects.contacts.write,crm.objects.contacts.read
        #[arg(long, value_delimiter = ',')]
        scopes: Vec<String>,
        #[arg(long, env = "SWITCHBOARD_DATABASE_URL", default_value = DEFAULT_DB)]
        db: String,
    },
}

#[derive(Subcommand)]
enum IgnoreCommand {
    /// Never match this number.
    Add {
        #[arg(long)]
        portal: i64,
        number: String,
        #[arg(long, default_value = "")]
        note: String,
        #[arg(long, env = "SWITCHBOARD_DATABASE_URL", default_value = DEFAULT_DB)]
        db: String,
    },
    /// Match this number again.
    Remove {
        #[arg(long)]
        portal: i64,
        number: String,
        #[arg(long, env = "SWITCHBOARD_DATABASE_URL", default_value = DEFAULT_DB)]
        db: String,
    },
    /// List ignored numbers.
    List {
        #[arg(long)]
        portal: i64,
        #[arg(long, env = "SWITCHBOARD_DATABASE_URL", default_value = DEFAULT_DB)]
        db: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn open(db: &str) -> Result<store::DynStore, String> {
    store::open(db)
        .await
        .map_err(|e| format!("cannot open database {db}: {e}"))
}

fn normalize_for_portal(number: &str, portal: &Portal) -> Result<String, String> {
    let region = normalize::region_code(&portal.default_region).ok_or("bad default region")?;
    normalize::normalize(number, None, region)
        .e164
        .ok_or_else(|| format!("\"{number}\" is not a phone number Switchboard can parse"))
}

async fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Serve {
            listen,
            db,
            demo: seed_demo,
            match_cap,
        } => {
            let store = open(&db).await?;
            // No import drops the indexes under a running server; one that was killed with
            // them dropped is repaired here, before anything reads through them.
            store.hold_for_serving().await.map_err(|e| e.to_string())?;
            for (name, took) in store
                .build_missing_indexes()
                .await
                .map_err(|e| e.to_string())?
            {
                tracing::warn!(
                    index = name,
                    ms = took.as_millis() as u64,
                    "built an index an unfinished import left out"
                );
            }
            let config = Config {
                match_cap,
                ..Config::default()
            };
            let state = Arc::new(
                AppState::load(store, config)
                    .await
                    .map_err(|e| e.to_string())?,
            );
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
            let addr = listener.local_addr().map_err(|e| e.to_string())?;
            if seed_demo {
                match demo::seed(&state).await.map_err(|e| format!("{e:?}"))? {
                    Some(token) => print_demo(&token, addr),
                    None => println!(
                        "The database already has data; --demo seeds only an empty database."
                    ),
                }
            }
            println!("Switchboard listening on http://{addr}");
            server::serve(state, listener)
                .await
                .map_err(|e| e.to_string())
        }
        Command::Portal {
            command:
                PortalCommand::Create {
                    id,
                    default_region,
                    db,
                },
        } => {
            let region = normalize::region_code(&default_region).ok_or_else(|| {
                format!("--default-region must be an ISO-3166 alpha-2 code, got {default_region}")
            })?;
            let store = open(&db).await?;
            store
                .create_portal(&Portal {
                    id,
                    default_region: region.to_string(),
                    associate: AssociateMode::Best,
                    suffix_digits: None,
                })
                .await
                .map_err(|e| e.to_string())?;
            store.close().await;
            println!("created portal {id} (default region {region})");
            Ok(())
        }
        Command::Token {
            command: TokenCommand::Create { portal, scopes, db },
        } => {
            let store = open(&db).await?;
            if store
                .portal(portal)
                .await
                .map_err(|e| e.to_string())?
                .is_none()
            {
                return Err(format!(
                    "no portal {portal}; create it with `switchboard portal create --id {portal}`"
                ));
            }
            let scopes: Vec<String> = scopes
                .into_iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            let token = new_token();
            store
                .create_token(portal, &hash_token(&token), &scopes)
                .await
                .map_err(|e| e.to_string())?;
            store.close().await;
            println!(
                "token for portal {portal} with scopes {}:",
                scopes.join(",")
            );
            println!("{token}");
            Ok(())
        }
        Command::Ignore { command } => run_ignore(command).await,
        Command::Import {
            kind,
            portal,
            file,
            map,
            reject_file,
            batch_size,
            quiet,
            indexes,
            db,
        } => {
            let object_type = match kind.as_str() {
                "contacts" => store::ObjectType::Contact,
                "companies" => store::ObjectType::Company,
                other => return Err(format!("import takes contacts or companies, not {other}")),
            };
            let reject_file = reject_file.unwrap_or_else(|| {
                let mut p = file.clone().into_os_string();
                p.push(".rejects.csv");
                p.into()
            });
            let opts = switchboard::import::ImportOptions {
                portal_id: portal,
                object_type,
                file,
                map: switchboard::import::parse_map(&map)?,
                reject_file: reject_file.clone(),
                batch_size: batch_size.max(1),
                progress: !quiet,
                indexes,
            };
            let store = open(&db).await?;
            let report = switchboard::import::run(store.as_ref(), &opts).await;
            store.close().await;
            let report = report?;
            println!("{}", switchboard::import::summary(&report, &reject_file));
            Ok(())
        }
        Command::Doctor {
            command: DoctorCommand::Phones { portal, db },
        } => {
            let store = open(&db).await?;
            let rows = store
                .phones_of_portal(portal)
                .await
                .map_err(|e| e.to_string())?;
            print!("{}", switchboard::callerid::doctor::report(portal, &rows));
            store.close().await;
            Ok(())
        }
    }
}

async fn run_ignore(command: IgnoreCommand) -> Result<(), String> {
    let (portal_id, db) = match &command {
        IgnoreCommand::Add { portal, db, .. }
        | IgnoreCommand::Remove { portal, db, .. }
        | IgnoreCommand::List { portal, db } => (*portal, db.clone()),
    };
    let store = open(&db).await?;
    let portal = store
        .portal(portal_id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no portal {portal_id}"))?;
    match command {
        IgnoreCommand::Add { number, note, .. } => {
            let e164 = normalize_for_portal(&number, &portal)?;
            store
                .ignore_number(&store::IgnoredNumber {
                    portal_id,
                    e164: e164.clone(),
                    note,
                    created_at: switchboard::clock::now_ms(),
                })
                .await
                .map_err(|e| e.to_string())?;
            println!(
                "{e164} now never matches in portal {portal_id} (a running server picks this up on restart; the admin API applies at once)"
            );
        }
        IgnoreCommand::Remove { number, .. } => {
            let e164 = normalize_for_portal(&number, &portal)?;
            let removed = store
                .unignore_number(portal_id, &e164)
                .await
                .map_err(|e| e.to_string())?;
            println!(
                "{}",
                if removed {
                    format!("{e164} removed")
                } else {
                    format!("{e164} was not ignored")
                }
            );
        }
        IgnoreCommand::List { .. } => {
            for n in store
                .ignored_numbers(Some(portal_id))
                .await
                .map_err(|e| e.to_string())?
            {
                println!("{}\t{}", n.e164, n.note);
            }
        }
    }
    store.close().await;
    Ok(())
}

fn print_demo(token: &str, addr: SocketAddr) {
    let caller = demo::example_caller();
    println!(
        "Demo portal {} seeded: 3 users, 50 contacts, 10 companies.",
        demo::DEMO_PORTAL_ID
    );
    println!("Token (every scope):");
    println!("{token}");
    println!("Try an inbound call:");
    println!(
        "curl -s -X POST http://{addr}/crm/v3/extensions/calling/inbound-call \\\n  -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' \\\n  -d '{{\"createEngagement\":true,\"engagementProperties\":{{}},\"externalCallId\":\"demo-call-1\",\"finalCallStatus\":\"COMPLETED\",\"fromNumber\":{{\"e164Number\":\"{caller}\",\"phoneNumberType\":\"FIXED_LINE\"}},\"toNumber\":{{\"e164Number\":\"+14155550100\",\"phoneNumberType\":\"FIXED_LINE\"}},\"potentialRecipientUserIds\":[1000001],\"userId\":1000001,\"durationSeconds\":95}}'"
    );
}
