//! Progress bars for long commands. They draw on standard error only when it is a terminal
//! (indicatif hides them otherwise), so piped and redirected output stays plain; `--quiet`
//! hides them everywhere.

use std::sync::atomic::{AtomicBool, Ordering};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

static QUIET: AtomicBool = AtomicBool::new(false);

/// Hides every bar made from now on.
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

fn styled(bar: ProgressBar, template: &str) -> ProgressBar {
    bar.set_style(ProgressStyle::with_template(template).expect("progress template is valid"));
    bar.set_draw_target(if quiet() {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    });
    bar
}

/// A bar over `total` bytes.
pub fn bytes(total: u64) -> ProgressBar {
    styled(
        ProgressBar::new(total),
        "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
    )
}

/// A bar over `total` things called `what` ("blobs checked").
pub fn items(total: u64, what: &str) -> ProgressBar {
    styled(
        ProgressBar::new(total),
        &format!("{{bar:40}} {{human_pos}}/{{human_len}} {what} eta {{eta}}"),
    )
}

/// A counter for work whose size is not known ahead ("blobs scanned").
pub fn counter(what: &str) -> ProgressBar {
    let bar = styled(
        ProgressBar::new_spinner(),
        &format!("{{spinner}} {{human_pos}} {what}"),
    );
    // Shown at once, not at the first tick: a short scan still says what it did.
    bar.tick();
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}
