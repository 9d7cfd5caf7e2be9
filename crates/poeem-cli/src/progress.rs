//! Progress bars for long library calls, drawn on stderr (hidden when stderr is not a terminal).

use indicatif::{ProgressBar, ProgressStyle};
use poeem::pq::{Progress, Stage};

/// A progress bar that follows the stages of a quantizer training run.
pub struct StageBar {
    bar: ProgressBar,
    stage: Option<Stage>,
}

impl StageBar {
    /// A bar that shows nothing until the first event.
    pub fn new() -> Self {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{prefix:>14} [{bar:30}] {pos}/{len} {msg} ({elapsed})")
                .expect("valid progress template")
                .progress_chars("=> "),
        );
        Self { bar, stage: None }
    }

    /// Shows one progress event.
    pub fn update(&mut self, event: &Progress) {
        if self.stage != Some(event.stage) {
            self.stage = Some(event.stage);
            self.bar.set_prefix(stage_name(event.stage));
            self.bar.set_length(event.total as u64);
        }
        self.bar.set_position(event.step as u64);
        self.bar
            .set_message(format!("objective {:.4e}", event.objective));
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

fn stage_name(stage: Stage) -> String {
    match stage {
        Stage::KMeans => "k-means".to_owned(),
        Stage::Coarse => "coarse k-means".to_owned(),
        Stage::Subspace { index, count } => format!("PQ {}/{count}", index + 1),
        Stage::OpqRound => "OPQ round".to_owned(),
        _ => "training".to_owned(),
    }
}
