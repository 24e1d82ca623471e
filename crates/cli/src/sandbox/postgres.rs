//! A PostgreSQL server of its own, for the sandbox and the tests: Debian's
//! package (`apt-get install postgresql`; tests/run.sh installs it), set up
//! with `initdb` in a directory the caller names and run as a child process
//! listening on 127.0.0.1 (a free port) and on a Unix socket in that
//! directory. The superuser `mconnect` signs in with a random password
//! (SCRAM), kept in `{dir}/password` so a later start on the same directory
//! finds the same cluster.
//!
//! PostgreSQL refuses to run as root, which CI is: when this process is
//! root, `initdb`, the server and `pg_ctl` run as the `postgres` user the
//! Debian package creates (std's `CommandExt::uid` drops root's groups before
//! it switches), and the directory is handed to that user.
//!
//! Invariants: the server ends with its [`LocalPostgres`]: `Drop` stops it
//! (fast shutdown, SIGKILL if that fails), and a watcher process holding a
//! lifeline pipe (as the sandbox's children do) stops it if this process
//! ends without dropping it (SIGKILL, abort); start-up waits at most
//! [`STARTUP_TIMEOUT`], and its error quotes the server's log.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The superuser `initdb` creates.
pub const SUPERUSER: &str = "mconnect";

/// How long a start may take before it is given up.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a stop may take before the server is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// A running (or stopped, for [`LocalPostgres::restart`]) local server.
pub struct LocalPostgres {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    password: String,
    /// The user and group the server runs as, when not this process's.
    owner: Option<(u32, u32)>,
    server: Option<Server>,
}

/// The server process and the watcher that stops it if this process dies.
struct Server {
    postmaster: Child,
    lifeline: Child,
}

impl LocalPostgres {
    /// Starts a server on `dir` (created if missing; a cluster is made there
    /// by `initdb` on first use, in `{dir}/data`), on a free port of
    /// 127.0.0.1. Waits until it accepts connections.
    pub fn start(dir: &Path) -> Result<LocalPostgres> {
        let bin = server_binaries()?;
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let dir = fs::canonicalize(dir)?;
        let owner = if running_as_root() {
            let (uid, gid) = postgres_user()?;
            hand_over(&dir, uid, gid)?;
            Some((uid, gid))
        } else {
            None
        };
        let mut local = LocalPostgres {
            bin,
            password: String::new(),
            port: 0,
            owner,
            server: None,
            dir,
        };
        local.password = local.init()?;
        // A free port can be taken between our look and the server's bind:
        // then another one is tried.
        let mut attempts = 0;
        loop {
            attempts += 1;
            local.port = free_port()?;
            match local.spawn() {
                Ok(server) => {
                    local.server = Some(server);
                    return Ok(local);
                }
                Err(e) if attempts < 4 && format!("{e:#}").contains("could not bind") => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory: the cluster (`data/`), the log (`postgres.log`), the
    /// Unix socket (`.s.PGSQL.{port}`) and the password file.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The superuser's password.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The connection string for `database`, as the superuser over TCP.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{SUPERUSER}:{}@127.0.0.1:{}/{database}",
            self.password, self.port
        )
    }

    /// Creates a database (UTF-8, as the cluster) and returns its URL.
    /// Names are lower-case letters, digits and `_`.
    pub fn create_database(&self, name: &str) -> Result<String> {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            bail!("database name `{name}`: use lower-case letters, digits and _");
        }
        let output = Command::new(self.bin.join("createdb"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                SUPERUSER,
            ])
            .arg(name)
            .env("PGPASSWORD", &self.password)
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::null())
            .output()
            .context("running createdb")?;
        if !output.status.success() {
            bail!(
                "createdb {name} failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(self.url(name))
    }

    /// Whether the server is running (it may have died by itself).
    pub fn is_running(&mut self) -> bool {
        self.server
            .as_mut()
            .is_some_and(|s| matches!(s.postmaster.try_wait(), Ok(None)))
    }

    /// Stops the server (fast shutdown: sessions are ended, a checkpoint is
    /// written). Does nothing if it is not running.
    pub fn stop(&mut self) -> Result<()> {
        self.stop_with("fast")
    }

    /// Stops the server as a crash would (immediate shutdown: no checkpoint;
    /// the next start replays the WAL). Does nothing if it is not running.
    pub fn crash(&mut self) -> Result<()> {
        self.stop_with("immediate")
    }

    /// Starts the server again on the same directory and port (after
    /// [`stop`](Self::stop) or [`crash`](Self::crash)).
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.server = Some(self.spawn()?);
        Ok(())
    }

    /// A command for one of the server's binaries, run as the server's user.
    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin.join(program));
        if let Some((uid, gid)) = self.owner {
            command.uid(uid).gid(gid);
        }
        // The caller's working directory may be closed to the postgres user.
        command
            .current_dir(&self.dir)
            .env("LC_ALL", "C")
            .env_remove("PGDATA")
            .stdin(Stdio::null());
        command
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    /// Makes the cluster unless it exists; returns the superuser's password.
    fn init(&self) -> Result<String> {
        let password_file = self.dir.join("password");
        if self.data().join("PG_VERSION").is_file() {
            let password = fs::read_to_string(&password_file).with_context(|| {
                format!(
                    "{} holds a cluster but no password file: remove the directory to start afresh",
                    self.dir.display()
                )
            })?;
            return Ok(password.trim().to_string());
        }
        let password = uuid::Uuid::new_v4().simple().to_string();
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&password_file)
            .with_context(|| format!("writing {}", password_file.display()))?;
        writeln!(file, "{password}")?;
        drop(file);
        if let Some((uid, gid)) = self.owner {
            std::os::unix::fs::chown(&password_file, Some(uid), Some(gid))?;
        }
        let output = self
            .command("initdb")
            .arg("-D")
            .arg(self.data())
            .args([
                "-U",
                SUPERUSER,
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .arg(format!("--pwfile={}", password_file.display()))
            .output()
            .context("running initdb")?;
        if !output.status.success() {
            bail!(
                "initdb in {} failed: {}{}",
                self.data().display(),
                String::from_utf8_lossy(&output.stdout).trim(),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(password)
    }

    /// Starts the postmaster and its lifeline watcher, and waits until the
    /// server accepts connections.
    fn spawn(&self) -> Result<Server> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .with_context(|| format!("opening {}", self.log_path().display()))?;
        let log_start = log.metadata()?.len();
        // A process group of its own, as the lifeline's: Ctrl-C in a
        // terminal reaches the owner, which stops the server in its turn
        // (a cluster sandbox stops its brokers first).
        let mut postmaster = self
            .command("postgres")
            .arg("-D")
            .arg(self.data())
            .arg("-k")
            .arg(&self.dir)
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .process_group(0)
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("starting postgres")?;
        let lifeline = match lifeline(postmaster.id()) {
            Ok(lifeline) => lifeline,
            Err(e) => {
                let _ = postmaster.kill();
                let _ = postmaster.wait();
                return Err(e);
            }
        };
        let mut server = Server {
            postmaster,
            lifeline,
        };
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = server.postmaster.try_wait() {
                server.end_lifeline();
                bail!(
                    "postgres on port {} exited at start ({status}); its log:\n{}",
                    self.port,
                    self.log_since(log_start)
                );
            }
            if self.ready(server.postmaster.id()) {
                return Ok(server);
            }
            if started.elapsed() > STARTUP_TIMEOUT {
                server.end_lifeline();
                let _ = server.postmaster.kill();
                let _ = server.postmaster.wait();
                bail!(
                    "postgres on port {} did not accept connections within {STARTUP_TIMEOUT:?}; its log:\n{}",
                    self.port,
                    self.log_since(log_start)
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The postmaster writes `ready` as the status line of
    /// `postmaster.pid` once it accepts connections (the file's process id
    /// tells it from a stale one a killed server left).
    fn ready(&self, pid: u32) -> bool {
        fs::read_to_string(self.data().join("postmaster.pid")).is_ok_and(|pid_file| {
            let line = |n: usize| pid_file.lines().nth(n).map(str::trim);
            line(0) == Some(pid.to_string().as_str())
                && line(3) == Some(self.port.to_string().as_str())
                && line(7) == Some("ready")
        })
    }

    /// What the server logged since `offset` (its last 40 lines).
    fn log_since(&self, offset: u64) -> String {
        let text = fs::read(self.log_path()).unwrap_or_default();
        let text = String::from_utf8_lossy(text.get(offset as usize..).unwrap_or_default());
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn stop_with(&mut self, mode: &str) -> Result<()> {
        let Some(mut server) = self.server.take() else {
            return Ok(());
        };
        // First the watcher, so that it signals nobody once the server's
        // process id is free again.
        server.end_lifeline();
        if let Ok(Some(_)) = server.postmaster.try_wait() {
            return Ok(());
        }
        let stopped = self
            .command("pg_ctl")
            .arg("stop")
            .arg("-D")
            .arg(self.data())
            .args(["-m", mode, "-w", "-t", &STOP_TIMEOUT.as_secs().to_string()])
            .output();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = server.postmaster.try_wait() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = server.postmaster.kill();
        let _ = server.postmaster.wait();
        match stopped {
            Ok(output) => bail!(
                "pg_ctl stop -m {mode} did not stop the server on port {} (killed it): {}",
                self.port,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
            Err(e) => bail!(
                "pg_ctl could not be run ({e}); the server on port {} was killed",
                self.port
            ),
        }
    }
}

impl Server {
    fn end_lifeline(&mut self) {
        let _ = self.lifeline.kill();
        let _ = self.lifeline.wait();
    }
}

impl Drop for LocalPostgres {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::warn!(error = %format!("{e:#}"), "stopping the local PostgreSQL");
        }
    }
}

/// A shell that waits on a pipe only this process writes to; when the pipe
/// closes (this process ended however it ended) it asks the server for a
/// fast shutdown. On a clean stop it is killed first.
fn lifeline(postmaster: u32) -> Result<Child> {
    Command::new("sh")
        .args([
            "-c",
            "trap '' INT TERM HUP QUIT; read -r _ignored; kill -INT \"$1\" 2>/dev/null",
            "mconnect-postgres-lifeline",
        ])
        .arg(postmaster.to_string())
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the PostgreSQL lifeline watcher")
}

/// The directory with `initdb`, `postgres`, `pg_ctl` and `createdb`:
/// `MCONNECT_PG_BIN`, else Debian's newest `/usr/lib/postgresql/{major}/bin`,
/// else the first on `PATH` that has them.
fn server_binaries() -> Result<PathBuf> {
    let complete = |dir: &Path| {
        ["initdb", "postgres", "pg_ctl", "createdb"]
            .iter()
            .all(|b| dir.join(b).is_file())
    };
    if let Some(dir) = std::env::var_os("MCONNECT_PG_BIN") {
        let dir = PathBuf::from(dir);
        if complete(&dir) {
            return Ok(dir);
        }
        bail!(
            "MCONNECT_PG_BIN={} lacks initdb, postgres, pg_ctl or createdb",
            dir.display()
        );
    }
    let mut debian: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((major, e.path().join("bin")))
        })
        .filter(|(_, bin)| complete(bin))
        .collect();
    debian.sort();
    if let Some((_, bin)) = debian.pop() {
        return Ok(bin);
    }
    if let Some(path) = std::env::var_os("PATH")
        && let Some(dir) = std::env::split_paths(&path).find(|d| complete(d))
    {
        return Ok(dir);
    }
    bail!(
        "PostgreSQL's server is not installed (no /usr/lib/postgresql/*/bin/initdb, none on PATH): apt-get install postgresql (tests/run.sh does), or set MCONNECT_PG_BIN to its bin directory"
    )
}

fn running_as_root() -> bool {
    // /proc/self belongs to the process's effective user.
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The `postgres` user's ids, from /etc/passwd.
fn postgres_user() -> Result<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd").context("reading /etc/passwd")?;
    passwd
        .lines()
        .find_map(|line| {
            let mut fields = line.split(':');
            if fields.next()? != "postgres" {
                return None;
            }
            let uid = fields.nth(1)?.parse().ok()?;
            let gid = fields.next()?.parse().ok()?;
            Some((uid, gid))
        })
        .context(
            "running as root, and there is no postgres user to run PostgreSQL as (PostgreSQL refuses root): apt-get install postgresql creates it",
        )
}

/// Gives `dir` to the server's user, after checking that user can reach it.
fn hand_over(dir: &Path, uid: u32, gid: u32) -> Result<()> {
    for ancestor in dir.ancestors().skip(1) {
        let meta = fs::metadata(ancestor)?;
        let searchable = if meta.uid() == uid {
            meta.mode() & 0o100 != 0
        } else if meta.gid() == gid {
            meta.mode() & 0o010 != 0
        } else {
            meta.mode() & 0o001 != 0
        };
        if !searchable {
            bail!(
                "{} is closed to the postgres user, which runs PostgreSQL (it refuses root): put {} where that user can reach it (under /tmp, for one), or chmod o+x {}",
                ancestor.display(),
                dir.display(),
                ancestor.display()
            );
        }
    }
    std::os::unix::fs::chown(dir, Some(uid), Some(gid))
        .with_context(|| format!("handing {} to the postgres user", dir.display()))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    Ok(())
}

/// A port of 127.0.0.1 free right now.
fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}
