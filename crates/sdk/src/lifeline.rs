//! When a participant process should stop: Ctrl-C, SIGTERM, or the death of
//! the process that started it (the sandbox), however that process ended.
//!
//! The parent's death is seen through a lifeline: a parent that sets
//! `MCONNECT_LIFELINE=stdin` gives the child a pipe on standard input and
//! keeps the write end; it never writes. When the parent exits for any reason
//! (SIGKILL included) the kernel closes that end and the child reads end of
//! file. This needs no unsafe code and no platform call, unlike a parent-death
//! signal (`PR_SET_PDEATHSIG`, Linux only and tied to the parent *thread*).
//!
//! Invariants: without the variable, standard input is never read (a provider
//! run by hand keeps its terminal); once the lifeline ends, the process exits
//! within [`LIFELINE_GRACE`] even if its own shutdown hangs, so no child
//! outlives its parent by more than that.

use std::io::Read;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::sync::watch;

/// The environment variable a parent sets to `stdin` to hand its child a
/// lifeline on standard input.
pub const LIFELINE_ENV: &str = "MCONNECT_LIFELINE";

/// How long a child may take to stop by itself once its lifeline ends,
/// before it exits regardless.
pub const LIFELINE_GRACE: Duration = Duration::from_secs(5);

/// Why [`until_stopped`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// Ctrl-C (SIGINT).
    Interrupt,
    /// SIGTERM.
    Terminate,
    /// The parent's lifeline ended: it stopped or died.
    ParentGone,
}

/// Set once the lifeline has ended; `None` until [`exit_when_parent_dies`] ran
/// with the variable set.
static PARENT_GONE: OnceLock<watch::Sender<bool>> = OnceLock::new();

/// Watches the lifeline, if the parent gave one (`MCONNECT_LIFELINE=stdin`):
/// when it ends, [`until_stopped`] returns, and the process exits after
/// [`LIFELINE_GRACE`] whatever it is doing. Call it first thing in `main`, so
/// a parent that dies while the child is still starting takes it along too.
/// Calling it again does nothing.
pub fn exit_when_parent_dies() {
    if std::env::var_os(LIFELINE_ENV).is_none_or(|v| v != "stdin") {
        return;
    }
    let mut first = false;
    let sender = PARENT_GONE.get_or_init(|| {
        first = true;
        watch::Sender::new(false)
    });
    if !first {
        return;
    }
    let sender = sender.clone();
    let watcher = std::thread::Builder::new()
        .name("mconnect-lifeline".into())
        .spawn(move || {
            wait_for_end_of_input(std::io::stdin().lock());
            sender.send_replace(true);
            std::thread::sleep(LIFELINE_GRACE);
            eprintln!("mconnect: the parent process is gone and shutdown took too long; exiting");
            std::process::exit(1);
        });
    if let Err(e) = watcher {
        // Without the watcher the child could outlive its parent: better not
        // to run at all.
        eprintln!("mconnect: cannot watch the parent process: {e}");
        std::process::exit(1);
    }
}

/// Waits until the process should stop: Ctrl-C, SIGTERM, or the end of the
/// lifeline (see [`exit_when_parent_dies`], which this calls).
pub async fn until_stopped() -> StopReason {
    exit_when_parent_dies();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let terminate = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    let parent_gone = async {
        match PARENT_GONE.get() {
            Some(sender) => {
                let mut gone = sender.subscribe();
                // The sender lives in a static: the channel never closes.
                let _ = gone.wait_for(|g| *g).await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => StopReason::Interrupt,
        () = terminate => StopReason::Terminate,
        () = parent_gone => StopReason::ParentGone,
    }
}

/// Reads (and drops) everything until end of input or a read error: either
/// means the parent's end of the pipe is closed.
fn wait_for_end_of_input(mut input: impl Read) {
    let mut buf = [0u8; 256];
    loop {
        match input.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes on the lifeline do not end it; end of file does.
    #[test]
    fn only_end_of_input_ends_the_lifeline() {
        let (mut reader, mut writer) = std::io::pipe().unwrap_or_else(|e| panic!("pipe: {e}"));
        let watcher = std::thread::spawn(move || wait_for_end_of_input(&mut reader));
        std::io::Write::write_all(&mut writer, b"noise").unwrap_or_else(|e| panic!("{e}"));
        std::thread::sleep(Duration::from_millis(100));
        assert!(!watcher.is_finished(), "data must not end the lifeline");
        drop(writer);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !watcher.is_finished() {
            assert!(
                std::time::Instant::now() < deadline,
                "end of file must end it"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
