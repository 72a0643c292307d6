//! A client of ovsdb-server over its unix socket: the OVSDB management protocol (RFC 7047),
//! JSON-RPC 1.0 with one `transact` per change. No `ovs-vsctl` process per call, and no
//! monitor: a CNI call connects, transacts, and closes.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

/// The database Open vSwitch keeps its configuration in.
pub const DATABASE: &str = "Open_vSwitch";

/// What went wrong talking to ovsdb-server.
#[derive(Debug, thiserror::Error)]
pub enum OvsdbError {
    /// No server at the socket (OVS is down or the path is wrong).
    #[error("connecting to ovsdb-server at {}: {error}", path.display())]
    Connect { path: PathBuf, error: std::io::Error },
    /// The connection broke or timed out.
    #[error("talking to ovsdb-server at {}: {error}", path.display())]
    Io { path: PathBuf, error: std::io::Error },
    /// The server answered something that is not the protocol.
    #[error("ovsdb-server at {}: {what}", path.display())]
    Protocol { path: PathBuf, what: String },
    /// The transaction failed: the operation (index in the transaction, or the commit) and
    /// the server's error and details.
    #[error("ovsdb transaction failed at {op}: {error}{}", if details.is_empty() { String::new() } else { format!(" ({details})") })]
    Transaction { op: String, error: String, details: String },
}

impl OvsdbError {
    /// Whether the server could not be reached at all.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Connect { .. })
    }
}

/// One connection to ovsdb-server.
#[derive(Debug)]
pub struct Ovsdb {
    path: PathBuf,
    stream: UnixStream,
    /// Bytes read and not yet parsed.
    pending: Vec<u8>,
    next_id: u64,
}

/// The request `transact` sends: RFC 7047 4.1.3, the database name then the operations.
pub fn transact_request(id: u64, ops: &[Value]) -> Value {
    let mut params = vec![json!(DATABASE)];
    params.extend(ops.iter().cloned());
    json!({"method": "transact", "params": params, "id": id})
}

impl Ovsdb {
    /// Connects to the server's unix socket; every later read or write gives up after
    /// `timeout`.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Self, OvsdbError> {
        let stream = UnixStream::connect(path)
            .map_err(|error| OvsdbError::Connect { path: path.to_owned(), error })?;
        let io = |error| OvsdbError::Io { path: path.to_owned(), error };
        stream.set_read_timeout(Some(timeout)).map_err(io)?;
        stream.set_write_timeout(Some(timeout)).map_err(io)?;
        Ok(Self { path: path.to_owned(), stream, pending: Vec::new(), next_id: 1 })
    }

    fn io(&self, error: std::io::Error) -> OvsdbError {
        OvsdbError::Io { path: self.path.clone(), error }
    }

    fn protocol(&self, what: impl Into<String>) -> OvsdbError {
        OvsdbError::Protocol { path: self.path.clone(), what: what.into() }
    }

    fn send(&mut self, message: &Value) -> Result<(), OvsdbError> {
        let bytes = serde_json::to_vec(message).map_err(|e| self.protocol(e.to_string()))?;
        self.stream.write_all(&bytes).map_err(|e| self.io(e))
    }

    /// The next whole JSON message from the server.
    fn receive(&mut self) -> Result<Value, OvsdbError> {
        loop {
            let mut stream = serde_json::Deserializer::from_slice(&self.pending).into_iter::<Value>();
            match stream.next() {
                Some(Ok(value)) => {
                    let used = stream.byte_offset();
                    self.pending.drain(..used);
                    return Ok(value);
                }
                Some(Err(e)) if !e.is_eof() => return Err(self.protocol(format!("not JSON: {e}"))),
                _ => {}
            }
            let mut buffer = [0u8; 16 * 1024];
            let n = self.stream.read(&mut buffer).map_err(|e| self.io(e))?;
            if n == 0 {
                return Err(self.protocol("closed the connection"));
            }
            self.pending.extend_from_slice(&buffer[..n]);
        }
    }

    /// Runs `ops` as one transaction; the result of each operation, in order. A failed
    /// operation or commit is an error naming it.
    pub fn transact(&mut self, ops: &[Value]) -> Result<Vec<Value>, OvsdbError> {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&transact_request(id, ops))?;
        loop {
            let message = self.receive()?;
            // The server checks the connection with echo requests; they must be answered.
            if message["method"] == "echo" {
                let reply = json!({"result": message["params"], "error": null, "id": message["id"]});
                self.send(&reply)?;
                continue;
            }
            if message["id"] != id {
                continue;
            }
            if !message["error"].is_null() {
                return Err(OvsdbError::Transaction {
                    op: "the request".into(),
                    error: message["error"].to_string(),
                    details: String::new(),
                });
            }
            let results = message["result"]
                .as_array()
                .cloned()
                .ok_or_else(|| self.protocol("a transact reply without result"))?;
            return check_results(ops, results);
        }
    }
}

/// RFC 7047 5.2: one result per operation; a failed one has `error`, and a result beyond
/// the operations is the commit's error.
fn check_results(ops: &[Value], results: Vec<Value>) -> Result<Vec<Value>, OvsdbError> {
    for (i, result) in results.iter().enumerate() {
        if let Some(error) = result.get("error").filter(|e| !e.is_null()) {
            let op = match ops.get(i) {
                Some(op) => format!(
                    "operation {i} ({} {})",
                    op["op"].as_str().unwrap_or("?"),
                    op["table"].as_str().unwrap_or("")
                ),
                None => "commit".into(),
            };
            return Err(OvsdbError::Transaction {
                op,
                error: error.as_str().unwrap_or_default().to_owned(),
                details: result["details"].as_str().unwrap_or_default().to_owned(),
            });
        }
    }
    Ok(results)
}

/// An OVSDB `uuid` atom.
pub fn uuid(id: &str) -> Value {
    json!(["uuid", id])
}

/// The atoms of a set column's value: a set is `["set", [...]]`, a one-element set may be
/// the atom alone.
pub fn set_atoms(value: &Value) -> Vec<Value> {
    match value {
        Value::Array(pair) if pair.first().and_then(Value::as_str) == Some("set") => {
            pair.get(1).and_then(Value::as_array).cloned().unwrap_or_default()
        }
        other => vec![other.clone()],
    }
}

/// The value of key `key` in a map column (`["map", [[k, v], ...]]`).
pub fn map_get<'a>(value: &'a Value, key: &str) -> Option<&'a Value> {
    value.get(1)?.as_array()?.iter().find(|pair| pair[0] == key).map(|pair| &pair[1])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn the_request_is_rfc_7047_json_rpc() {
        let op = json!({"op": "select", "table": "Bridge", "where": [["name", "==", "br0"]]});
        assert_eq!(
            transact_request(7, &[op]).to_string(),
            r#"{"id":7,"method":"transact","params":["Open_vSwitch",{"op":"select","table":"Bridge","where":[["name","==","br0"]]}]}"#
        );
    }

    /// A server that answers an echo first, then the transaction in two pieces.
    #[test]
    fn answers_echo_and_reads_a_reply_split_across_reads_and_reports_errors() {
        let dir = std::env::temp_dir().join(format!("plexus-ovsdb-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("db.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let read = |conn: &mut UnixStream| {
                let mut buf = vec![0; 4096];
                let n = conn.read(&mut buf).unwrap();
                serde_json::from_slice::<Value>(&buf[..n]).unwrap()
            };
            let request = read(&mut conn);
            conn.write_all(br#"{"method":"echo","params":["x"],"id":"echo"}"#).unwrap();
            let echo = read(&mut conn);
            conn.write_all(br#"{"id":1,"result":[{"rows":[]},{"cou"#).unwrap();
            std::thread::sleep(Duration::from_millis(20));
            conn.write_all(br#"nt":0}],"error":null}"#).unwrap();
            let second = read(&mut conn);
            conn.write_all(br#"{"id":2,"result":[{"uuid":["uuid","a"]},{"error":"constraint violation","details":"duplicate name"}],"error":null}"#)
                .unwrap();
            (request, echo, second)
        });
        let mut db = Ovsdb::connect(&path, Duration::from_secs(5)).unwrap();
        let ops = [
            json!({"op": "select", "table": "Port", "where": []}),
            json!({"op": "mutate", "table": "Bridge"}),
        ];
        let results = db.transact(&ops).unwrap();
        assert_eq!(results, vec![json!({"rows": []}), json!({"count": 0})]);
        let err = db.transact(&[json!({"op": "insert", "table": "Port"})]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "ovsdb transaction failed at commit: constraint violation (duplicate name)"
        );
        let (request, echo, second) = server.join().unwrap();
        assert_eq!(request["params"][0], "Open_vSwitch");
        assert_eq!(echo, json!({"result": ["x"], "error": null, "id": "echo"}));
        assert_eq!(second["id"], 2);
        std::fs::remove_dir_all(&dir).unwrap();

        let gone = Ovsdb::connect(&dir.join("db.sock"), Duration::from_secs(1)).unwrap_err();
        assert!(gone.is_unreachable(), "{gone}");
    }

    #[test]
    fn reads_sets_and_maps() {
        assert_eq!(set_atoms(&json!(["set", [["uuid", "a"], ["uuid", "b"]]])).len(), 2);
        assert_eq!(set_atoms(&json!(["uuid", "a"])), vec![json!(["uuid", "a"])]);
        let map = json!(["map", [["created-by", "plexus"], ["x", "y"]]]);
        assert_eq!(map_get(&map, "created-by"), Some(&json!("plexus")));
        assert_eq!(map_get(&map, "z"), None);
    }
}
