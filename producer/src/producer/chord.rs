//! Reading a chord's member results (PROTOCOL.md §13): inline in the callback's summary, or
//! stored in `<PREFIX>_RESULTS` when too large for it.

use jetq_contract::workflow::{
    batch::MemberResult,
    results::{ChordResults, ResultError},
};

use super::Producer;

impl Producer {
    /// A chord member's result as a callback received it: the inline `result`, or the object
    /// its `result_ref` names, read from the results store (`<PREFIX>_RESULTS`); `None` when it
    /// has neither (no result, or left out beyond the inline bound: `results_truncated`).
    ///
    /// ```no_run
    /// # async fn callback(producer: jetq_producer::Producer,
    /// #     summary: jetq_contract::workflow::BatchSummary) -> Result<(), Box<dyn std::error::Error>> {
    /// for member in &summary.results {
    ///     let value = producer.chord_result(member).await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn chord_result(
        &self,
        member: &MemberResult,
    ) -> Result<Option<serde_json::Value>, ResultError> {
        if member.result_ref.is_none() {
            return Ok(member.result.clone());
        }
        let store = self
            .chord_results
            .get_or_try_init(|| ChordResults::open(&self.js, &self.subjects))
            .await?;
        store.resolve(member).await
    }
}
