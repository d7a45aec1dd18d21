//! A bare HTTP/1.1 client over one `TcpStream`, for tests that need what a pooled client
//! library hides: request headers of their choice, response headers as sent, one
//! connection kept (idle) between requests, or a body that stops half-way.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One response read off the wire.
#[derive(Debug)]
pub struct RawReply {
    pub status: u16,
    /// Header names lowercased, in the order sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawReply {
    /// The value of header `name` (case-insensitive), if sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One keep-alive connection to a node's HTTP API.
pub struct RawConn {
    reader: BufReader<TcpStream>,
    host: String,
    token: String,
}

impl RawConn {
    /// Connect to `api` (`http://host:port`) with `token` for every request.
    pub fn connect(api: &str, token: &str) -> RawConn {
        let host = api.trim_start_matches("http://").to_string();
        let stream = TcpStream::connect(&host).unwrap_or_else(|e| panic!("connect {host}: {e}"));
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .expect("set a read timeout");
        RawConn {
            reader: BufReader::new(stream),
            host,
            token: token.to_string(),
        }
    }

    /// The head of a request (through the blank line), with `Authorization`.
    fn head(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> String {
        let mut s = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n",
            self.host, self.token
        );
        for (n, v) in headers {
            s.push_str(&format!("{n}: {v}\r\n"));
        }
        s.push_str("\r\n");
        s
    }

    /// Send raw bytes; an error (the server closed) is returned, not a panic.
    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let s = self.reader.get_mut();
        s.write_all(bytes)?;
        s.flush()
    }

    /// Send a request head (and `body`, if any) without reading the answer.
    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<()> {
        let mut msg = self.head(method, path, headers).into_bytes();
        msg.extend_from_slice(body);
        self.send_raw(&msg)
    }

    /// Send a request and read its response (`HEAD`: headers only).
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<RawReply> {
        self.send(method, path, headers, body)?;
        self.read_reply(method == "HEAD")
    }

    /// Read one response; a body is read by its `Content-Length` (none for `HEAD`,
    /// 1xx, 204 and 304).
    pub fn read_reply(&mut self, head_only: bool) -> std::io::Result<RawReply> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed before a response",
            ));
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {line:?}"));
        let mut headers = Vec::new();
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((n, v)) = l.split_once(':') {
                headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let mut reply = RawReply {
            status,
            headers,
            body: Vec::new(),
        };
        if head_only || status == 204 || status == 304 || status < 200 {
            return Ok(reply);
        }
        let len: usize = reply
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("response without Content-Length: {reply:?}"));
        let mut body = vec![0u8; len];
        self.reader.read_exact(&mut body)?;
        reply.body = body;
        Ok(reply)
    }

    /// Whether the server closed the connection: reads until EOF or `within`.
    pub fn closed_within(&mut self, within: Duration) -> bool {
        let s = self.reader.get_mut();
        let _ = s.set_read_timeout(Some(within));
        let mut buf = [0u8; 4096];
        let closed = loop {
            match self.reader.read(&mut buf) {
                Ok(0) => break true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
                Err(_) => break false,
            }
        };
        let _ = self
            .reader
            .get_mut()
            .set_read_timeout(Some(Duration::from_secs(60)));
        closed
    }
}
