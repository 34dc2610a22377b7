//! The one live display on a terminal: per-database progress lines drawn
//! by indicatif at the bottom of stderr, with log lines and the demo's
//! messages printed above them (never through them). Nothing here draws
//! when stderr is not a terminal: journald and `2>&1 | tee` get plain lines.

use std::io::{self, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use indicatif::{MultiProgress, ProgressDrawTarget};

/// Set to any value to turn the live display off on a terminal too.
pub const NO_PROGRESS_ENV: &str = "PGMIGRATE_NO_PROGRESS";

static MULTI: OnceLock<MultiProgress> = OnceLock::new();
static DRAWING: AtomicBool = AtomicBool::new(false);

/// Whether a live display may be drawn: stderr is a terminal and
/// [`NO_PROGRESS_ENV`] is not set.
pub fn live_display_wanted() -> bool {
    io::stderr().is_terminal() && std::env::var_os(NO_PROGRESS_ENV).is_none()
}

/// The display's bars, drawn on stderr.
pub fn multi() -> &'static MultiProgress {
    MULTI.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
}

/// Marks the bars as drawn (or gone), so output goes around them.
pub fn set_drawing(drawing: bool) {
    DRAWING.store(drawing, Ordering::Relaxed);
}

/// Runs `print` with the bars hidden, if any are drawn, so its lines land
/// above them instead of inside.
fn around_bars<R>(print: impl FnOnce() -> R) -> R {
    match MULTI.get() {
        Some(multi) if DRAWING.load(Ordering::Relaxed) => multi.suspend(print),
        _ => print(),
    }
}

/// Prints `line` on stdout, above the bars when they are drawn.
pub fn say(line: &str) {
    around_bars(|| println!("{line}"));
}

/// A `tracing_subscriber` writer for stderr that prints each log record
/// above the bars while they are drawn.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        around_bars(|| io::stderr().lock().write_all(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;
    fn make_writer(&'a self) -> LogWriter {
        LogWriter
    }
}
