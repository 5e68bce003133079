//! A per-layer filter that never lets a callsite cache `Interest::always`.
//!
//! tracing-subscriber hands a per-layer filter's decision from `enabled()` to the layer's
//! `on_new_span`/`on_event` through thread-local state. When a callsite caches
//! `Interest::always`, the macros skip `enabled()`, and the layer reads whatever the previous,
//! unrelated `enabled()` call left behind: spans (such as a task's `process` span) silently
//! vanish from the logs or the traces (tokio-rs/tracing#2519, fixed upstream by capping the
//! interest at `sometimes`, tokio-rs/tracing#3572). This wrapper applies the same cap, so
//! `enabled()` runs for every span and event and the state is always fresh.

use tracing::{span, subscriber::Interest, Event, Metadata};
use tracing_subscriber::layer::{Context, Filter};

/// Wraps a filter, capping its callsite interest at `sometimes` (see the module docs).
#[derive(Debug)]
pub(crate) struct Fresh<F>(pub(crate) F);

impl<S, F: Filter<S>> Filter<S> for Fresh<F> {
    fn enabled(&self, meta: &Metadata<'_>, cx: &Context<'_, S>) -> bool {
        self.0.enabled(meta, cx)
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        if self.0.callsite_enabled(meta).is_never() {
            Interest::never()
        } else {
            Interest::sometimes()
        }
    }

    fn event_enabled(&self, event: &Event<'_>, cx: &Context<'_, S>) -> bool {
        self.0.event_enabled(event, cx)
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        self.0.max_level_hint()
    }

    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        self.0.on_new_span(attrs, id, ctx)
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        self.0.on_record(id, values, ctx)
    }

    fn on_enter(&self, id: &span::Id, ctx: Context<'_, S>) {
        self.0.on_enter(id, ctx)
    }

    fn on_exit(&self, id: &span::Id, ctx: Context<'_, S>) {
        self.0.on_exit(id, ctx)
    }

    fn on_close(&self, id: span::Id, ctx: Context<'_, S>) {
        self.0.on_close(id, ctx)
    }
}
