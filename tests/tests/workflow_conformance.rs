//! The Rust side of docs/conformance/workflows.json (PROTOCOL §13): bucket names, keys, member
//! ids, callback and link ids, ids accepted and refused, records and markers as read, and the
//! exact bodies of callbacks and chain links.

use jetq_contract::{
    workflow::{
        self,
        batch::{self, BatchRecord, BatchState, BatchSummary, Callback, MemberMarker, Which},
        chain::{self, ChainLink, ChainRecord},
    },
    Subjects,
};
use serde_json::Value;

fn vectors() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/conformance/workflows.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("vectors file")).expect("JSON")
}

fn text(value: &Value) -> &str {
    value.as_str().expect("a string")
}

#[test]
fn names_keys_and_ids() {
    let v = vectors();
    for case in v["buckets"].as_array().unwrap() {
        let subjects = Subjects::new(text(&case["prefix"])).unwrap();
        assert_eq!(workflow::bucket(&subjects), text(&case["bucket"]));
    }
    assert_eq!(v["headers"]["batch"], workflow::BATCH);
    assert_eq!(v["headers"]["chain"], workflow::CHAIN);
    for case in v["keys"].as_array().unwrap() {
        let key = text(&case["key"]);
        if let Some(chain_id) = case["chain"].as_str() {
            assert_eq!(chain::record_key(chain_id), key);
        } else if let Some(member) = case["member"].as_str() {
            assert_eq!(batch::member_key(text(&case["batch"]), member), key);
        } else {
            assert_eq!(batch::record_key(text(&case["batch"])), key);
        }
    }
    for case in v["member_ids"].as_array().unwrap() {
        assert_eq!(
            batch::member_id(text(&case["task_id"])),
            text(&case["member"])
        );
    }
    let ids = &v["ids"];
    assert_eq!(
        batch::callback_id(text(&ids["on_success"]["batch"]), Which::OnSuccess),
        text(&ids["on_success"]["id"])
    );
    assert_eq!(
        batch::callback_id(text(&ids["on_complete"]["batch"]), Which::OnComplete),
        text(&ids["on_complete"]["id"])
    );
    assert_eq!(
        batch::child_member_id(text(&ids["child_member"]["batch"])),
        text(&ids["child_member"]["id"])
    );
    for link in ids["links"].as_array().unwrap() {
        let (chain_id, index) = (
            text(&link["chain"]),
            link["index"].as_u64().unwrap() as usize,
        );
        assert_eq!(chain::link_id(chain_id, index), text(&link["id"]));
        assert_eq!(chain::header_value(chain_id, index), text(&link["header"]));
        assert_eq!(
            chain::parse_header(text(&link["header"])),
            Some((chain_id, index))
        );
    }
    for id in v["valid_ids"].as_array().unwrap() {
        assert!(workflow::validate_id("batch", text(id)).is_ok(), "{id}");
    }
    for id in v["invalid_ids"].as_array().unwrap() {
        assert!(workflow::validate_id("batch", text(id)).is_err(), "{id}");
    }
}

#[test]
fn records_and_markers_as_read() {
    let v = vectors();
    for case in v["records"].as_array().unwrap() {
        let record = BatchRecord::from_json(text(&case["json"]).as_bytes())
            .unwrap_or_else(|err| panic!("{}: {err}", case["name"]));
        let state: BatchState = serde_json::from_value(case["state"].clone()).unwrap();
        assert_eq!(record.state, state, "{}", case["name"]);
        assert_eq!(Value::from(record.total), case["total"], "{}", case["name"]);
        assert_eq!(Value::from(record.chord), case["chord"], "{}", case["name"]);
        assert_eq!(
            Value::from(record.may_be_complete()),
            case["may_be_complete"],
            "{}",
            case["name"]
        );
    }
    for case in v["markers"].as_array().unwrap() {
        let marker = MemberMarker::from_json(text(&case["json"]).as_bytes()).unwrap();
        assert_eq!(
            serde_json::to_value(marker.outcome).unwrap(),
            case["outcome"]
        );
        assert_eq!(marker.result.unwrap_or(Value::Null), case["result"]);
    }
}

#[test]
fn callback_and_link_bodies_are_exact() {
    let v = vectors();
    for case in v["callback_bodies"].as_array().unwrap() {
        let callback = Callback::new("q", "t", case["args"].clone()).unwrap();
        let summary: BatchSummary = serde_json::from_value(case["summary"].clone()).unwrap();
        assert_eq!(
            String::from_utf8(callback.body(&summary)).unwrap(),
            text(&case["body"])
        );
    }
    for case in v["chain_bodies"].as_array().unwrap() {
        let links: Vec<ChainLink> = serde_json::from_value(case["links"].clone()).unwrap();
        let record = ChainRecord::new("c", links).unwrap();
        let index = case["index"].as_u64().unwrap() as usize;
        let result = Some(&case["result"]).filter(|r| !r.is_null());
        assert_eq!(
            String::from_utf8(record.body(index, result)).unwrap(),
            text(&case["body"])
        );
    }
}

#[test]
fn large_results_and_trace_links() {
    use workflow::results;
    let v = vectors();
    for case in v["markers"].as_array().unwrap() {
        let marker = MemberMarker::from_json(text(&case["json"]).as_bytes()).unwrap();
        assert_eq!(
            marker.result_ref.map(Value::from).unwrap_or(Value::Null),
            case.get("result_ref").cloned().unwrap_or(Value::Null)
        );
        assert_eq!(
            marker.traceparent.map(Value::from).unwrap_or(Value::Null),
            case.get("traceparent").cloned().unwrap_or(Value::Null)
        );
    }
    let r = &v["results"];
    for case in r["buckets"].as_array().unwrap() {
        let subjects = Subjects::new(text(&case["prefix"])).unwrap();
        assert_eq!(results::bucket(&subjects), text(&case["bucket"]));
    }
    for case in r["objects"].as_array().unwrap() {
        assert_eq!(
            results::object_name(text(&case["batch"]), text(&case["member"])),
            text(&case["name"])
        );
    }
    assert_eq!(r["max_marker_result"], results::MAX_MARKER_RESULT);
    assert_eq!(r["max_links"], results::MAX_LINKS);
    assert_eq!(r["links_header"], results::LINKS);
    for case in r["summaries"].as_array().unwrap() {
        let mut record = BatchRecord::new(
            text(&case["record"]["id"]),
            case["record"]["total"].as_u64().unwrap(),
        );
        record.chord = case["record"]["chord"].as_bool().unwrap();
        let markers: Vec<(String, MemberMarker)> =
            serde_json::from_value(case["markers"].clone()).unwrap();
        let summary = BatchSummary::from_markers(&record, &markers);
        assert_eq!(serde_json::to_value(&summary).unwrap(), case["summary"]);
        assert_eq!(
            results::links_header(&markers)
                .map(Value::from)
                .unwrap_or(Value::Null),
            case["links"]
        );
    }
    let many = &r["many_links"];
    let markers: Vec<(String, MemberMarker)> = (0..many["members"].as_u64().unwrap())
        .map(|i| {
            let mut marker = MemberMarker::new(workflow::MemberOutcome::Succeeded, None);
            marker.traceparent = Some(text(&many["traceparent"]).to_owned());
            (format!("m{i:04}"), marker)
        })
        .collect();
    let header = results::links_header(&markers).unwrap();
    assert_eq!(
        Value::from(results::parse_links(&header).len()),
        many["links"]
    );
}
