//! `docs/conformance/dead_letters.json` against the contract's one dead-letter type: every
//! `read` vector's headers parse to its record ([`DeadLetterHeaders::read`]), and every `write`
//! vector's record writes exactly its headers ([`DeadLetterHeaders::write_to`]), byte for byte.

use std::{collections::BTreeMap, path::PathBuf};

use async_nats::HeaderMap;
use jetq_contract::DeadLetterHeaders;
use serde::Deserialize;

#[derive(Deserialize)]
struct Vectors {
    read: Vec<ReadVector>,
    write: Vec<WriteVector>,
}

#[derive(Deserialize)]
struct ReadVector {
    name: String,
    headers: BTreeMap<String, String>,
    expected: serde_json::Value,
}

#[derive(Deserialize)]
struct WriteVector {
    name: String,
    record: DeadLetterHeaders,
    headers: BTreeMap<String, String>,
}

fn vectors() -> Vectors {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/conformance/dead_letters.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|err| panic!("{} is not valid: {err}", path.display()))
}

#[test]
fn every_read_vector_parses_to_its_record() {
    let vectors = vectors();
    assert!(vectors.read.len() >= 10, "the read vectors went missing");
    for vector in vectors.read {
        let mut map = HeaderMap::new();
        for (name, value) in &vector.headers {
            map.insert(name.as_str(), value.as_str());
        }
        let read = serde_json::to_value(DeadLetterHeaders::read(&map)).expect("record encodes");
        assert_eq!(read, vector.expected, "read vector {}", vector.name);
    }
}

#[test]
fn every_write_vector_writes_exactly_its_headers() {
    let vectors = vectors();
    assert!(vectors.write.len() >= 3, "the write vectors went missing");
    for vector in vectors.write {
        let mut map = HeaderMap::new();
        vector.record.write_to(&mut map);
        let mut written = BTreeMap::new();
        for (name, values) in map.iter() {
            let values: Vec<&str> = values.iter().map(|v| v.as_str()).collect();
            assert_eq!(
                values.len(),
                1,
                "write vector {}: {name} written twice",
                vector.name
            );
            written.insert(name.to_string(), values[0].to_owned());
        }
        assert_eq!(written, vector.headers, "write vector {}", vector.name);
        // And what is written reads back as the record.
        assert_eq!(
            DeadLetterHeaders::read(&map),
            vector.record,
            "write vector {}",
            vector.name
        );
    }
}
