//! The cluster sandbox's load balancer: Debian's nginx in stream mode
//! (`apt-get install nginx libnginx-mod-stream`; tests/run.sh installs
//! them), run as a child process with a configuration of its own in
//! `{dir}/nginx/`. It passes TLS through untouched (layer 4), so each
//! broker still terminates TLS and sees the client's certificate.
//!
//! Health checks. Open-source nginx checks upstreams only passively in
//! stream mode: a broker whose port refuses a connection (or does not
//! accept it within `proxy_connect_timeout`) counts as failed for
//! [`FAIL_TIMEOUT`] (`max_fails=1`), and the same client connection is
//! handed to the next broker (`proxy_next_upstream`). What nginx cannot see
//! (a broker that accepts connections but reports itself unready on
//! `/readyz`, or hangs) the sandbox's supervisor checks actively
//! (`cluster.rs`): it rewrites the upstream with such a broker marked
//! `down` and reloads nginx (SIGHUP), which takes new connections to the
//! new configuration at once.
//!
//! Invariants: nginx runs in the foreground (`daemon off`) as the leader of
//! a process group of its own, with a guard (`children::guard`) that ends
//! the group (master and workers) when the sandbox ends, SIGKILL included;
//! every file it writes (pid, error and access logs) is in `{dir}/nginx/`;
//! the configuration is replaced whole (written aside, renamed), so a
//! reload never reads half a file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::children;

/// How long nginx counts a broker that refused a connection as failed.
pub(crate) const FAIL_TIMEOUT: Duration = Duration::from_secs(2);

/// How long nginx waits for a broker to accept a connection before it
/// tries the next.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a start may take.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);

/// Old workers finish the connections they hold after a reload for at most
/// this long (a stream proxy cannot tell where one request ends).
const WORKER_SHUTDOWN: Duration = Duration::from_secs(30);

/// One broker in the upstream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Upstream {
    /// Its name in the sandbox, for the configuration's comments.
    pub(crate) name: String,
    /// Its data plane.
    pub(crate) addr: SocketAddr,
    /// Marked `down`: nginx sends it nothing.
    pub(crate) down: bool,
}

/// The running load balancer.
pub(crate) struct Nginx {
    binary: PathBuf,
    dir: PathBuf,
    listen: SocketAddr,
    module: Option<PathBuf>,
    master: Child,
    guard: Child,
    /// The upstream the running configuration has.
    upstreams: Vec<Upstream>,
}

impl Nginx {
    /// Writes the configuration into `dir` (created; absolute paths) and
    /// starts nginx listening on `listen`; returns once it accepts
    /// connections there.
    pub(crate) fn start(dir: &Path, listen: SocketAddr, upstreams: &[Upstream]) -> Result<Nginx> {
        let binary = binary()?;
        let module = stream_module(&binary)?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let dir = std::fs::canonicalize(dir)?;
        let conf = dir.join("nginx.conf");
        write_atomically(&conf, &config(&dir, listen, module.as_deref(), upstreams))?;
        let tested = Command::new(&binary)
            .args(nginx_args(&dir))
            .arg("-t")
            .stdin(Stdio::null())
            .output()
            .context("running nginx -t")?;
        if !tested.status.success() {
            bail!(
                "nginx refuses the configuration {}: {}",
                conf.display(),
                String::from_utf8_lossy(&tested.stderr).trim()
            );
        }
        let (master, guard) = launch(&binary, &dir, listen)?;
        Ok(Nginx {
            binary,
            dir,
            listen,
            module,
            master,
            guard,
            upstreams: upstreams.to_vec(),
        })
    }

    /// The master process's id.
    pub(crate) fn pid(&self) -> u32 {
        self.master.id()
    }

    /// The directory of its configuration and logs.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the master process still runs.
    pub(crate) fn is_running(&mut self) -> bool {
        matches!(self.master.try_wait(), Ok(None))
    }

    /// Puts `upstreams` in force: rewrites the configuration and signals
    /// the master (SIGHUP), which re-reads it, starts new workers and lets
    /// the old ones finish their connections. Does nothing when nothing changed.
    pub(crate) fn reload(&mut self, upstreams: &[Upstream]) -> Result<()> {
        if upstreams == self.upstreams.as_slice() {
            return Ok(());
        }
        let conf = self.dir.join("nginx.conf");
        write_atomically(
            &conf,
            &config(&self.dir, self.listen, self.module.as_deref(), upstreams),
        )?;
        if !children::signal(self.master.id(), 1, false) {
            bail!("nginx (pid {}) could not be signalled", self.master.id());
        }
        self.upstreams = upstreams.to_vec();
        Ok(())
    }

    /// Starts nginx again with the configuration in force (after its master died).
    pub(crate) fn restart(&mut self) -> Result<()> {
        self.stop();
        let conf = self.dir.join("nginx.conf");
        write_atomically(
            &conf,
            &config(
                &self.dir,
                self.listen,
                self.module.as_deref(),
                &self.upstreams,
            ),
        )?;
        (self.master, self.guard) = launch(&self.binary, &self.dir, self.listen)?;
        Ok(())
    }

    /// Stops nginx (fast shutdown: SIGTERM to the master, which closes its
    /// connections and stops its workers) and waits; kills the whole
    /// process group if it has not ended after the lifeline's grace period.
    pub(crate) fn stop(&mut self) {
        children::end_guard(&mut self.guard);
        let group = self.master.id();
        if matches!(self.master.try_wait(), Ok(None)) {
            children::signal(group, 15, false);
            let deadline = Instant::now() + mconnect_sdk::LIFELINE_GRACE;
            while matches!(self.master.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // Workers of a master that was killed would stay: end the group.
        children::signal(group, 9, true);
        let _ = self.master.kill();
        let _ = self.master.wait();
    }

    #[cfg(test)]
    fn binary(&self) -> &Path {
        &self.binary
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts the master with the configuration in `dir` and its guard, and
/// waits until it accepts connections on `listen`.
fn launch(binary: &Path, dir: &Path, listen: SocketAddr) -> Result<(Child, Child)> {
    let error_log = dir.join("error.log");
    let log_start = std::fs::metadata(&error_log).map_or(0, |m| m.len());
    let mut master = {
        use std::os::unix::process::CommandExt;
        Command::new(binary)
            .args(nginx_args(dir))
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting nginx")?
    };
    let mut guard = match children::guard(master.id()) {
        Ok(guard) => guard,
        Err(e) => {
            let _ = master.kill();
            let _ = master.wait();
            return Err(e);
        }
    };
    let started = Instant::now();
    loop {
        if let Ok(Some(status)) = master.try_wait() {
            children::end_guard(&mut guard);
            bail!(
                "nginx exited at start ({status}); its error log:\n{}",
                tail(&error_log, log_start)
            );
        }
        if std::net::TcpStream::connect_timeout(&listen, Duration::from_millis(200)).is_ok() {
            return Ok((master, guard));
        }
        if started.elapsed() > STARTUP_TIMEOUT {
            children::end_guard(&mut guard);
            children::signal(master.id(), 9, true);
            let _ = master.kill();
            let _ = master.wait();
            bail!(
                "nginx did not listen on {listen} within {STARTUP_TIMEOUT:?}; its error log:\n{}",
                tail(&error_log, log_start)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// nginx's arguments: the prefix, the configuration and the error log
/// (until the configuration's own is open) all in `dir`.
fn nginx_args(dir: &Path) -> Vec<std::ffi::OsString> {
    vec![
        "-p".into(),
        dir.as_os_str().to_owned(),
        "-c".into(),
        dir.join("nginx.conf").into_os_string(),
        "-e".into(),
        dir.join("error.log").into_os_string(),
    ]
}

/// The configuration: one stream server on `listen` passing connections
/// round robin to the upstreams not marked down. When every broker is
/// down none is marked, and nginx's passive checks decide alone (a broker
/// that reports itself unready may still answer, where none at all would).
fn config(dir: &Path, listen: SocketAddr, module: Option<&Path>, upstreams: &[Upstream]) -> String {
    let all_down = upstreams.iter().all(|u| u.down);
    let mut servers = String::new();
    for u in upstreams {
        let down = u.down && !all_down;
        servers.push_str(&format!(
            "        # broker {}: {}\n        server {} max_fails=1 fail_timeout={}s{};\n",
            u.name,
            if down {
                "not ready on /readyz, sent nothing"
            } else {
                "in service"
            },
            u.addr,
            FAIL_TIMEOUT.as_secs(),
            if down { " down" } else { "" },
        ));
    }
    let load = module
        .map(|m| format!("load_module {};\n", m.display()))
        .unwrap_or_default();
    format!(
        "# Written by `mconnect sandbox --cluster` at start and whenever a broker's\n\
         # readiness changes; edits are overwritten.\n\
         {load}daemon off;\n\
         master_process on;\n\
         worker_processes 1;\n\
         pid {pid};\n\
         error_log {error} notice;\n\
         worker_shutdown_timeout {shutdown}s;\n\
         events {{\n    worker_connections 4096;\n}}\n\
         stream {{\n\
         \x20   log_format mconnect '$time_iso8601 $remote_addr:$remote_port $status up=$upstream_addr connect=$upstream_connect_time in=$bytes_received out=$bytes_sent time=$session_time';\n\
         \x20   access_log {access} mconnect;\n\
         \x20   upstream mconnect_brokers {{\n{servers}    }}\n\
         \x20   server {{\n\
         \x20       listen {listen};\n\
         \x20       proxy_pass mconnect_brokers;\n\
         \x20       proxy_connect_timeout {connect}ms;\n\
         \x20       proxy_next_upstream on;\n\
         \x20       proxy_next_upstream_tries {tries};\n\
         \x20       proxy_timeout 10m;\n\
         \x20   }}\n\
         }}\n",
        pid = dir.join("nginx.pid").display(),
        error = dir.join("error.log").display(),
        access = dir.join("access.log").display(),
        shutdown = WORKER_SHUTDOWN.as_secs(),
        connect = CONNECT_TIMEOUT.as_millis(),
        tries = upstreams.len().max(1),
    )
}

/// The nginx binary: `MCONNECT_NGINX`, else `/usr/sbin/nginx`, else the
/// first on `PATH`.
fn binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("MCONNECT_NGINX") {
        let path = PathBuf::from(path);
        if path.is_file() {
            return Ok(path);
        }
        bail!("MCONNECT_NGINX={} is not a file", path.display());
    }
    let debian = PathBuf::from("/usr/sbin/nginx");
    if debian.is_file() {
        return Ok(debian);
    }
    if let Some(path) = std::env::var_os("PATH")
        && let Some(dir) = std::env::split_paths(&path).find(|d| d.join("nginx").is_file())
    {
        return Ok(dir.join("nginx"));
    }
    bail!(
        "the cluster sandbox's load balancer is nginx, which is not installed: apt-get install nginx libnginx-mod-stream (tests/run.sh does), or set MCONNECT_NGINX"
    )
}

/// The stream module to load, if nginx has it as a dynamic module (as
/// Debian builds it: `libnginx-mod-stream`); `None` when it is built in.
fn stream_module(binary: &Path) -> Result<Option<PathBuf>> {
    let output = Command::new(binary)
        .arg("-V")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {} -V", binary.display()))?;
    // nginx -V writes to standard error.
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    let options: Vec<&str> = text.split_whitespace().collect();
    if options.contains(&"--with-stream") {
        return Ok(None);
    }
    if !options.contains(&"--with-stream=dynamic") {
        bail!(
            "{} was built without the stream module, which the load balancer needs",
            binary.display()
        );
    }
    let modules = options
        .iter()
        .find_map(|o| o.strip_prefix("--modules-path="))
        .unwrap_or("/usr/lib/nginx/modules");
    let module = Path::new(modules).join("ngx_stream_module.so");
    if !module.is_file() {
        bail!(
            "nginx's stream module is not installed ({} is missing): apt-get install libnginx-mod-stream",
            module.display()
        );
    }
    Ok(Some(module))
}

fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let partial = path.with_extension("conf.partial");
    std::fs::write(&partial, text).with_context(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The last 20 lines of `path` after `offset`.
fn tail(path: &Path, offset: u64) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(text.get(offset as usize..).unwrap_or_default());
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn upstreams(down: [bool; 2]) -> Vec<Upstream> {
        vec![
            Upstream {
                name: "a".into(),
                addr: "127.0.0.1:9001".parse().unwrap(),
                down: down[0],
            },
            Upstream {
                name: "b".into(),
                addr: "127.0.0.1:9002".parse().unwrap(),
                down: down[1],
            },
        ]
    }

    #[test]
    fn marks_down_only_while_another_broker_is_in_service() {
        let dir = Path::new("/tmp/x");
        let listen = "127.0.0.1:9000".parse().unwrap();
        let text = config(dir, listen, None, &upstreams([false, true]));
        assert!(text.contains("server 127.0.0.1:9001 max_fails=1 fail_timeout=2s;"));
        assert!(text.contains("server 127.0.0.1:9002 max_fails=1 fail_timeout=2s down;"));
        assert!(text.contains("listen 127.0.0.1:9000;"));
        assert!(!text.contains("load_module"));
        let text = config(dir, listen, None, &upstreams([true, true]));
        assert!(!text.contains(" down;"), "{text}");
        let text = config(
            dir,
            listen,
            Some(Path::new("/m/ngx_stream_module.so")),
            &upstreams([false, false]),
        );
        assert!(
            text.starts_with("# Written") && text.contains("load_module /m/ngx_stream_module.so;")
        );
    }

    /// Debian's nginx: it accepts the configuration, passes
    /// connections to a listener, and after a reload that marks it down
    /// passes them to the other; its processes end with `stop`.
    #[test]
    fn proxies_and_follows_a_reload() {
        // tests/run.sh installs nginx and its stream module.
        use std::io::{Read, Write};
        let dir = tempfile::tempdir().unwrap();
        let backends: Vec<std::net::TcpListener> = (0..2)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let mut ups = upstreams([false, false]);
        for (u, l) in ups.iter_mut().zip(&backends) {
            u.addr = l.local_addr().unwrap();
        }
        // Each backend answers its own name once per connection.
        for (name, listener) in ["a", "b"].into_iter().zip(backends) {
            std::thread::spawn(move || {
                for stream in listener.incoming().take(20) {
                    let mut stream = stream.unwrap();
                    let _ = stream.write_all(name.as_bytes());
                }
            });
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut nginx = Nginx::start(&dir.path().join("nginx"), port, &ups).unwrap();
        assert!(nginx.binary().is_file());
        let ask = || {
            let mut s = std::net::TcpStream::connect(port).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            out
        };
        let mut seen: Vec<String> = (0..4).map(|_| ask()).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen, ["a", "b"]);
        ups[0].down = true;
        nginx.reload(&ups).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            // After the reload, only b: old workers no longer accept.
            if (0..3).all(|_| ask() == "b") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "still sent to a after the reload"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let pid = nginx.pid();
        drop(nginx);
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z "))
        );
    }
}
