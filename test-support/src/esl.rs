//! A small blocking client for FreeSWITCH's event socket.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

pub struct Esl {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

pub type Headers = HashMap<String, String>;

fn url_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text).decode_utf8_lossy().into_owned()
}

impl Esl {
    pub fn connect(port: u16, password: &str) -> std::io::Result<Esl> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut esl = Esl { reader: BufReader::new(stream.try_clone()?), writer: stream };
        let (greeting, _) = esl.read_message()?;
        if greeting.get("Content-Type").map(String::as_str) != Some("auth/request") {
            return Err(std::io::Error::other(format!("unexpected greeting {greeting:?}")));
        }
        let reply = esl.command(&format!("auth {password}"))?;
        if !reply.starts_with("+OK") {
            return Err(std::io::Error::other(format!("auth refused: {reply}")));
        }
        Ok(esl)
    }

    fn read_message(&mut self) -> std::io::Result<(Headers, String)> {
        let mut headers = Headers::new();
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "event socket closed"));
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                if headers.is_empty() {
                    continue;
                }
                break;
            }
            if let Some((key, value)) = line.split_once(": ") {
                headers.insert(key.to_string(), url_decode(value));
            }
        }
        let mut body = String::new();
        if let Some(length) = headers.get("Content-Length").and_then(|l| l.parse::<usize>().ok()) {
            let mut bytes = vec![0u8; length];
            self.reader.read_exact(&mut bytes)?;
            body = String::from_utf8_lossy(&bytes).into_owned();
        }
        Ok((headers, body))
    }

    /// Sends a command and returns its Reply-Text.
    pub fn command(&mut self, command: &str) -> std::io::Result<String> {
        self.writer.write_all(format!("{command}\n\n").as_bytes())?;
        loop {
            let (headers, _) = self.read_message()?;
            if headers.get("Content-Type").map(String::as_str) == Some("command/reply") {
                return Ok(headers.get("Reply-Text").cloned().unwrap_or_default());
            }
        }
    }

    /// Runs an API command and returns its output.
    pub fn api(&mut self, command: &str) -> String {
        self.writer.write_all(format!("api {command}\n\n").as_bytes()).expect("event socket write");
        loop {
            let (headers, body) = self.read_message().expect("event socket read");
            if headers.get("Content-Type").map(String::as_str) == Some("api/response") {
                return body;
            }
        }
    }

    pub fn subscribe(&mut self, events: &str) {
        let reply = self.command(&format!("event plain {events}")).expect("subscribe");
        assert!(reply.starts_with("+OK"), "subscribe: {reply}");
    }

    /// The next event matching `wanted`, within `limit`.
    pub fn wait_event(&mut self, limit: Duration, wanted: impl Fn(&Headers) -> bool) -> Option<Headers> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let event = self.next_event(left)?;
            if wanted(&event) {
                return Some(event);
            }
        }
    }

    /// The next event of any kind, within `limit`.
    pub fn next_event(&mut self, limit: Duration) -> Option<Headers> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            self.writer.set_read_timeout(Some(left.max(Duration::from_millis(1)))).ok()?;
            let (headers, body) = self.read_message().ok()?;
            if headers.get("Content-Type").map(String::as_str) != Some("text/event-plain") {
                continue;
            }
            let mut event = Headers::new();
            let mut lines = body.lines();
            for line in lines.by_ref() {
                if line.is_empty() {
                    break;
                }
                if let Some((key, value)) = line.split_once(": ") {
                    event.insert(key.to_string(), url_decode(value));
                }
            }
            if event.contains_key("Content-Length") {
                event.insert("_body".to_string(), lines.collect::<Vec<_>>().join("\n"));
            }
            return Some(event);
        }
    }
}
