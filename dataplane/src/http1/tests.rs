//! Codec tests: every RFC 9112 rule with its status, incremental parsing,
//! chunked decoding under arbitrary splits, pipelining and round trips.

use super::*;

fn limits() -> Limits {
    Limits::default()
}

fn parse_req(buf: &[u8]) -> Result<Option<usize>, H1Error> {
    let mut head = RequestHead::new();
    parse_request_head(buf, &limits(), &mut head)
}

fn ok_req(buf: &[u8]) -> RequestHead {
    let mut head = RequestHead::new();
    let n = parse_request_head(buf, &limits(), &mut head)
        .unwrap_or_else(|e| panic!("{:?}: {e}", String::from_utf8_lossy(buf)))
        .expect("complete");
    assert_eq!(n, buf.len());
    head
}

/// Status of the error parsing (and framing) `buf` produces.
fn req_status(buf: &[u8]) -> u16 {
    let mut head = RequestHead::new();
    match parse_request_head(buf, &limits(), &mut head) {
        Err(e) => e.status(),
        Ok(None) => panic!("incomplete: {:?}", String::from_utf8_lossy(buf)),
        Ok(Some(_)) => match request_body_kind(&head) {
            Err(e) => e.status(),
            Ok(_) => 200,
        },
    }
}

fn get(extra: &str) -> Vec<u8> {
    format!("GET / HTTP/1.1\r\nHost: a\r\n{extra}\r\n").into_bytes()
}

// ------------------------------------------------------------ request line

#[test]
fn simple_get() {
    let h = ok_req(b"GET /a/b?x=1&y HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n");
    assert_eq!(h.method, Method::Get);
    assert_eq!(h.method_str(), "GET");
    assert_eq!(h.version, Version::Http11);
    assert_eq!(h.target(), b"/a/b?x=1&y");
    assert_eq!(h.path_and_query(), b"/a/b?x=1&y");
    assert_eq!(h.path(), b"/a/b");
    assert_eq!(h.query(), Some(&b"x=1&y"[..]));
    assert_eq!(h.target_form(), TargetForm::Origin);
    assert_eq!(h.authority(), None);
    assert_eq!(h.host(), Some(&b"example.com"[..]));
    assert_eq!(h.headers.get("accept"), Some(&b"*/*"[..]));
    assert_eq!(request_body_kind(&h), Ok(BodyKind::Empty));

    let h = ok_req(b"GET /a? HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(h.query(), Some(&b""[..]));
    assert_eq!(h.path(), b"/a");
}

#[test]
fn methods() {
    for (m, want) in [
        ("GET", Method::Get),
        ("HEAD", Method::Head),
        ("POST", Method::Post),
        ("PUT", Method::Put),
        ("DELETE", Method::Delete),
        ("OPTIONS", Method::Options),
        ("TRACE", Method::Trace),
        ("PATCH", Method::Patch),
        ("PROPFIND", Method::Other),
        ("get", Method::Other),
    ] {
        let h = ok_req(format!("{m} / HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
        assert_eq!(h.method, want, "{m}");
        assert_eq!(h.method_str(), m);
        assert_eq!(Method::from_bytes(m.as_bytes()), want);
        if want != Method::Other {
            assert_eq!(want.as_str(), Some(m));
        }
    }
    assert!(ok_req(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n").is_head());
}

#[test]
fn http10_without_host_is_fine() {
    let h = ok_req(b"GET /x HTTP/1.0\r\n\r\n");
    assert_eq!(h.version, Version::Http10);
    assert_eq!(h.host(), None);
}

#[test]
fn leading_empty_lines_are_skipped() {
    let buf = b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
    let h = ok_req(buf);
    assert_eq!(h.target(), b"/");
    let many = [&b"\r\n".repeat(9)[..], &get("")[..]].concat();
    assert_eq!(req_status(&many), 400);
    let eight = [&b"\r\n".repeat(8)[..], &get("")[..]].concat();
    assert_eq!(req_status(&eight), 200);
    // A bare LF as an empty line is still a bare LF.
    assert_eq!(req_status(&[&b"\n"[..], &get("")[..]].concat()), 400);
}

#[test]
fn versions() {
    assert_eq!(req_status(b"GET / HTTP/2.0\r\nHost: a\r\n\r\n"), 505);
    assert_eq!(req_status(b"GET / HTTP/1.2\r\nHost: a\r\n\r\n"), 505);
    assert_eq!(req_status(b"GET / HTTP/3.0\r\n\r\n"), 505);
    // HTTP/0.9 simple request.
    assert_eq!(req_status(b"GET /\r\n\r\n"), 505);
    assert_eq!(parse_req(b"GET /index.html\r\n"), Err(H1Error::UnsupportedVersion));
    assert_eq!(req_status(b"GET / http/1.1\r\nHost: a\r\n\r\n"), 400);
    assert_eq!(req_status(b"GET / HTTP/1.1x\r\nHost: a\r\n\r\n"), 400);
    assert_eq!(req_status(b"GET / HTTP/11\r\nHost: a\r\n\r\n"), 400);
    assert_eq!(req_status(b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n"), 400);
}

#[test]
fn request_line_syntax() {
    for bad in [
        &b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
        b"GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n",
        b" GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET\r\nHost: a\r\n\r\n",
        b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / /x HTTP/1.1\r\nHost: a\r\n\r\n",
    ] {
        assert_eq!(req_status(bad), 400, "{:?}", String::from_utf8_lossy(bad));
    }
}

#[test]
fn garbage_is_refused_before_a_line_ends() {
    // A TLS ClientHello on a plain port.
    assert!(matches!(parse_req(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"), Err(H1Error::BadRequestLine(_))));
    assert_eq!(parse_req(b"GE"), Ok(None));
    assert_eq!(parse_req(b"GET /\x01"), Ok(None), "the target is judged once complete");
}

#[test]
fn targets() {
    for bad in [
        &b"GET x HTTP/1.1\r\nHost: a\r\n\r\n"[..],
        b"GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /a\x7fb HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET * HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET http://u:p@a.com/ HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET http:/a.com/ HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET 1http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
        b"CONNECT /x HTTP/1.1\r\nHost: a\r\n\r\n",
        b"CONNECT u@a.com:443 HTTP/1.1\r\nHost: a\r\n\r\n",
    ] {
        assert_eq!(req_status(bad), 400, "{:?}", String::from_utf8_lossy(bad));
    }
}

#[test]
fn asterisk_and_authority_forms() {
    let h = ok_req(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(h.target_form(), TargetForm::Asterisk);
    assert_eq!(h.path_and_query(), b"*");

    let h = ok_req(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n");
    assert_eq!(h.method, Method::Connect);
    assert_eq!(h.target_form(), TargetForm::Authority);
    assert_eq!(h.authority(), Some(&b"example.com:443"[..]));
    assert_eq!(h.path_and_query(), b"");
    assert_eq!(h.query(), None);
    let h = ok_req(b"CONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\r\n\r\n");
    assert_eq!(h.authority(), Some(&b"[::1]:443"[..]));
}

#[test]
fn absolute_form() {
    let h = ok_req(b"GET http://Example.com:8080/p/q?x=y HTTP/1.1\r\nHost: other\r\n\r\n");
    assert_eq!(h.target_form(), TargetForm::Absolute);
    assert_eq!(h.target(), b"http://Example.com:8080/p/q?x=y");
    assert_eq!(h.authority(), Some(&b"Example.com:8080"[..]));
    // RFC 9112 §3.2.2: the target's authority overrides Host.
    assert_eq!(h.host(), Some(&b"Example.com:8080"[..]));
    assert_eq!(h.path_and_query(), b"/p/q?x=y");
    assert_eq!(h.path(), b"/p/q");
    assert_eq!(h.query(), Some(&b"x=y"[..]));

    let h = ok_req(b"GET https://a.com?x HTTP/1.1\r\nHost: a.com\r\n\r\n");
    assert_eq!(h.path_and_query(), b"/?x");
    assert_eq!(h.path(), b"/");
    assert_eq!(h.query(), Some(&b"x"[..]));
    assert_eq!(h.target(), b"https://a.com?x");

    let h = ok_req(b"GET http://a.com HTTP/1.1\r\nHost: a.com\r\n\r\n");
    assert_eq!(h.path_and_query(), b"/");
    assert_eq!(h.query(), None);
}

#[test]
fn request_line_limit_414() {
    let long_target = format!("/{}", "a".repeat(8200));
    let line = format!("GET {long_target} HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(parse_req(line.as_bytes()), Err(H1Error::RequestLineTooLong));
    assert_eq!(req_status(line.as_bytes()), 414);
    // Detected before the CRLF arrives.
    let partial = format!("GET {long_target}");
    assert_eq!(parse_req(partial.as_bytes()), Err(H1Error::RequestLineTooLong));
    // Exactly at the limit is fine.
    let l = Limits { max_request_line: 16, ..limits() };
    let mut head = RequestHead::new();
    let at = b"GET /23 HTTP/1.1\r\nHost: a\r\n\r\n"; // line is 16 bytes
    assert!(parse_request_head(at, &l, &mut head).unwrap().is_some());
    let over = b"GET /234 HTTP/1.1\r\nHost: a\r\n\r\n";
    assert_eq!(parse_request_head(over, &l, &mut head), Err(H1Error::RequestLineTooLong));
    // A CR that is the last byte received does not count against the limit.
    assert_eq!(parse_request_head(b"GET /23 HTTP/1.1\r", &l, &mut RequestHead::new()), Ok(None));
    assert_eq!(parse_request_head(b"GET /23 HTTP/1.1X", &l, &mut RequestHead::new()), Err(H1Error::RequestLineTooLong));
}

#[test]
fn head_limits_431() {
    let big = format!("X-Big: {}\r\n", "b".repeat(61 * 1024));
    assert_eq!(parse_req(&get(&big)), Err(H1Error::HeadTooLarge));
    assert_eq!(req_status(&get(&big)), 431);
    // Before the head is complete.
    let partial = format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}", "b".repeat(61 * 1024));
    assert_eq!(parse_req(partial.as_bytes()), Err(H1Error::HeadTooLarge));

    let many: String = (0..100).map(|i| format!("X-{i}: v\r\n")).collect();
    assert_eq!(req_status(&get(&many)), 431, "Host + 100 = 101 fields");
    let fits: String = (0..99).map(|i| format!("X-{i}: v\r\n")).collect();
    assert_eq!(req_status(&get(&fits)), 200);
    let partial = format!("GET / HTTP/1.1\r\nHost: a\r\n{many}X-more");
    assert_eq!(parse_req(partial.as_bytes()), Err(H1Error::TooManyHeaders));

    // Exact head-size boundary: the head counts start line to final CRLF.
    let buf = get("");
    let l = Limits { max_head_bytes: buf.len(), ..limits() };
    assert!(parse_request_head(&buf, &l, &mut RequestHead::new()).unwrap().is_some());
    let l = Limits { max_head_bytes: buf.len() - 1, ..limits() };
    assert_eq!(parse_request_head(&buf, &l, &mut RequestHead::new()), Err(H1Error::HeadTooLarge));
}

#[test]
fn many_headers_beyond_the_stack_array() {
    let l = Limits { max_headers: 1000, ..limits() };
    let many: String = (0..300).map(|i| format!("X-{i}: v{i}\r\n")).collect();
    let buf = get(&many);
    let mut head = RequestHead::new();
    assert_eq!(parse_request_head(&buf, &l, &mut head), Ok(Some(buf.len())));
    assert_eq!(head.headers.len(), 301);
    assert_eq!(head.headers.get("x-299"), Some(&b"v299"[..]));
}

// ------------------------------------------------------------- field lines

#[test]
fn field_values_are_trimmed_and_may_be_empty() {
    let h = ok_req(&get("X-A:  a b \t\r\nX-Empty:\r\nX-Obs: café\r\nX-Tab:\tv\r\n"));
    assert_eq!(h.headers.get("x-a"), Some(&b"a b"[..]));
    assert_eq!(h.headers.get("x-empty"), Some(&b""[..]));
    assert_eq!(h.headers.get("x-obs"), Some(&b"caf\xc3\xa9"[..]));
    assert_eq!(h.headers.get("x-tab"), Some(&b"v"[..]));
    let names: Vec<_> = h.headers.iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["host", "x-a", "x-empty", "x-obs", "x-tab"]);
}

#[test]
fn obs_fold_400() {
    assert_eq!(parse_req(&get("X: a\r\n b\r\n")), Err(H1Error::ObsFold));
    assert_eq!(parse_req(&get("X: a\r\n\tb\r\n")), Err(H1Error::ObsFold));
    assert_eq!(
        parse_req(b"GET / HTTP/1.1\r\n Host: a\r\n\r\n"),
        Err(H1Error::ObsFold),
        "whitespace after the request line"
    );
    assert_eq!(req_status(&get("X: a\r\n b\r\n")), 400);
}

#[test]
fn bare_cr_400() {
    assert_eq!(parse_req(&get("X: a\rb\r\n")), Err(H1Error::BareCr));
    assert_eq!(parse_req(b"GET /\r HTTP/1.1\r\nHost: a\r\n\r\n"), Err(H1Error::BareCr));
    assert_eq!(parse_req(b"GET / HTTP/1.1\r\nHost: a\r\n\r\r\n"), Err(H1Error::BareCr));
    // A CR at the very end waits for the next byte.
    assert_eq!(parse_req(b"GET / HTTP/1.1\r\nHost: a\r"), Ok(None));
    assert_eq!(parse_req(b"GET / HTTP/1.1\r\nHost: a\rx"), Err(H1Error::BareCr));
}

#[test]
fn bare_lf_400_in_requests() {
    assert_eq!(parse_req(b"GET / HTTP/1.1\nHost: a\n\n"), Err(H1Error::BareLf));
    assert_eq!(parse_req(b"GET / HTTP/1.1\r\nHost: a\n\r\n"), Err(H1Error::BareLf));
    assert_eq!(parse_req(b"GET / HTTP/1.1\r\nHost: a\r\n\n"), Err(H1Error::BareLf));
    assert_eq!(req_status(b"GET / HTTP/1.1\nHost: a\n\n"), 400);
}

#[test]
fn space_before_colon_400() {
    assert_eq!(parse_req(b"GET / HTTP/1.1\r\nHost : a\r\n\r\n"), Err(H1Error::SpaceBeforeColon));
    assert_eq!(parse_req(&get("Content-Length\t: 0\r\n")), Err(H1Error::SpaceBeforeColon));
    assert_eq!(req_status(&get("X :a\r\n")), 400);
}

#[test]
fn field_name_and_value_chars_400() {
    for bad in ["X(y): a\r\n", "X y: a\r\n", ": a\r\n", "NoColon\r\n", "X\"q: a\r\n", "Ünicode: a\r\n"] {
        assert_eq!(req_status(&get(bad)), 400, "{bad:?}");
    }
    for bad in ["X: a\x01b\r\n", "X: a\x00\r\n", "X: a\x7fb\r\n", "X: \x1b[31m\r\n"] {
        assert_eq!(parse_req(&get(bad)), Err(H1Error::BadHeaderValue), "{bad:?}");
    }
}

#[test]
fn host_rules() {
    assert_eq!(parse_req(b"GET / HTTP/1.1\r\nX: a\r\n\r\n"), Err(H1Error::MissingHost));
    assert_eq!(req_status(b"GET / HTTP/1.1\r\n\r\n"), 400);
    assert_eq!(parse_req(b"GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n"), Err(H1Error::MultipleHost));
    assert_eq!(parse_req(b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n"), Err(H1Error::MultipleHost));
    for bad in ["a b", "a/b", "a@b", "a?b", "a\\b"] {
        let buf = format!("GET / HTTP/1.1\r\nHost: {bad}\r\n\r\n");
        assert_eq!(parse_req(buf.as_bytes()), Err(H1Error::BadHost), "{bad}");
    }
    for good in ["", "a.com", "a.com:80", "[::1]:8080", "xn--bcher-kva.example", "A_b-c~"] {
        let buf = format!("GET / HTTP/1.1\r\nHost: {good}\r\n\r\n");
        let h = ok_req(buf.as_bytes());
        assert_eq!(h.host(), Some(good.as_bytes()));
    }
}

// ---------------------------------------------------------------- framing

#[test]
fn content_length_rules() {
    let h = ok_req(&get("Content-Length: 5\r\n"));
    assert_eq!(request_body_kind(&h), Ok(BodyKind::Length(5)));
    let h = ok_req(&get("Content-Length: 0\r\n"));
    assert_eq!(request_body_kind(&h), Ok(BodyKind::Length(0)));
    let h = ok_req(&get("Content-Length: 007\r\n"));
    assert_eq!(request_body_kind(&h), Ok(BodyKind::Length(7)));
    assert_eq!(h.headers.get("content-length"), Some(&b"007"[..]));

    // RFC 9112 §6.3 item 5: identical values collapse to one field.
    for same in [
        "Content-Length: 5, 5\r\n",
        "Content-Length: 5\r\nContent-Length: 5\r\n",
        "Content-Length: 5,5\r\nContent-Length: 5\r\n",
    ] {
        let h = ok_req(&get(same));
        assert_eq!(request_body_kind(&h), Ok(BodyKind::Length(5)), "{same:?}");
        assert_eq!(h.headers.count("content-length"), 1);
        assert_eq!(h.headers.get("content-length"), Some(&b"5"[..]));
    }
    for differ in ["Content-Length: 5, 6\r\n", "Content-Length: 5\r\nContent-Length: 6\r\n"] {
        assert_eq!(parse_req(&get(differ)), Err(H1Error::ConflictingContentLength));
        assert_eq!(req_status(&get(differ)), 400);
    }
    for bad in [
        "Content-Length: abc\r\n",
        "Content-Length: -1\r\n",
        "Content-Length: +5\r\n",
        "Content-Length: 5 5\r\n",
        "Content-Length: 0x10\r\n",
        "Content-Length:\r\n",
        "Content-Length: 5,\r\n",
        "Content-Length: 18446744073709551616\r\n",
        "Content-Length: 99999999999999999999999\r\n",
    ] {
        assert_eq!(parse_req(&get(bad)), Err(H1Error::BadContentLength), "{bad:?}");
    }
    let h = ok_req(&get("Content-Length: 18446744073709551615\r\n"));
    assert_eq!(request_body_kind(&h), Ok(BodyKind::Length(u64::MAX)));
}

#[test]
fn transfer_encoding_rules() {
    let h = ok_req(&get("Transfer-Encoding: chunked\r\n"));
    assert_eq!(request_body_kind(&h), Ok(BodyKind::Chunked));
    let h = ok_req(&get("Transfer-Encoding: Chunked\r\n"));
    assert_eq!(request_body_kind(&h), Ok(BodyKind::Chunked));
    let h = ok_req(&get("Transfer-Encoding: , chunked\r\n"));
    assert_eq!(request_body_kind(&h), Ok(BodyKind::Chunked));

    let cases: &[(&str, u16, H1Error)] = &[
        ("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", 400, H1Error::ContentLengthAndTransferEncoding),
        ("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", 400, H1Error::ContentLengthAndTransferEncoding),
        ("Transfer-Encoding: chunked, gzip\r\n", 400, H1Error::ChunkedNotLast),
        ("Transfer-Encoding: gzip\r\n", 400, H1Error::ChunkedNotLast),
        ("Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n", 400, H1Error::ChunkedNotLast),
        ("Transfer-Encoding:\r\n", 400, H1Error::ChunkedNotLast),
        ("Transfer-Encoding: chunked;x=1\r\n", 400, H1Error::ChunkedNotLast),
        ("Transfer-Encoding: chunked, chunked\r\n", 400, H1Error::ChunkedTwice),
        ("Transfer-Encoding: gzip, chunked\r\n", 501, H1Error::UnsupportedTransferCoding),
        ("Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n", 501, H1Error::UnsupportedTransferCoding),
        ("Transfer-Encoding: identity, chunked\r\n", 501, H1Error::UnsupportedTransferCoding),
    ];
    for (fields, status, err) in cases {
        let h = ok_req(&get(fields));
        assert_eq!(request_body_kind(&h), Err(*err), "{fields:?}");
        assert_eq!(req_status(&get(fields)), *status, "{fields:?}");
    }
    let h = ok_req(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_eq!(request_body_kind(&h), Err(H1Error::TransferEncodingInHttp10));
    assert_eq!(req_status(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), 400);
}

#[test]
fn hop_by_hop_fields_are_stripped() {
    let mut h = Headers::new();
    for (n, v) in [
        ("Host", "a"),
        ("Connection", "close, X-Secret, host"),
        ("Connection", "Content-Length"),
        ("X-Secret", "s"),
        ("Content-Length", "3"),
        ("Keep-Alive", "timeout=5"),
        ("Proxy-Connection", "keep-alive"),
        ("TE", "trailers"),
        ("Transfer-Encoding", "chunked"),
        ("Upgrade", "websocket"),
        ("X-Keep", "k"),
    ] {
        h.append(n, v.as_bytes());
    }
    let d = strip_hop_by_hop(&mut h);
    assert_eq!(d, ConnectionDirectives { close: true, keep_alive: false, upgrade: false });
    let left: Vec<_> = h.iter().map(|(n, _)| n).collect();
    assert_eq!(left, ["host", "content-length", "x-keep"]);

    let mut h = Headers::new();
    h.append("connection", b"Keep-Alive, Upgrade");
    h.append("upgrade", b"websocket");
    let d = strip_hop_by_hop(&mut h);
    assert!(d.keep_alive && d.upgrade && !d.close);
    assert!(h.is_empty());

    assert!(ConnectionDirectives::default().persistent(Version::Http11));
    assert!(!ConnectionDirectives::default().persistent(Version::Http10));
    let ka = ConnectionDirectives { keep_alive: true, ..Default::default() };
    assert!(ka.persistent(Version::Http10));
    let close = ConnectionDirectives { close: true, keep_alive: true, ..Default::default() };
    assert!(!close.persistent(Version::Http11));
}

// -------------------------------------------------------------- responses

fn parse_res(buf: &[u8]) -> Result<(ResponseHead, usize), H1Error> {
    let mut head = ResponseHead::new();
    let n = parse_response_head(buf, &limits(), &mut head)?.expect("complete");
    Ok((head, n))
}

fn res_kind(buf: &[u8], head_req: bool) -> Result<BodyKind, H1Error> {
    let (h, _) = parse_res(buf)?;
    response_body_kind(head_req, &h)
}

#[test]
fn response_heads() {
    let wire = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nServer: x\r\n\r\nhello";
    let (h, n) = parse_res(wire).unwrap();
    assert_eq!(n, wire.len() - 5);
    assert_eq!(h.status, 200);
    assert_eq!(h.reason(), "OK");
    assert_eq!(h.version, Version::Http11);
    assert_eq!(h.headers.get("server"), Some(&b"x"[..]));
    assert_eq!(response_body_kind(false, &h), Ok(BodyKind::Length(5)));

    let (h, _) = parse_res(b"HTTP/1.0 404 Not Found Here\r\n\r\n").unwrap();
    assert_eq!(h.version, Version::Http10);
    assert_eq!(h.reason(), "Not Found Here");
    let (h, _) = parse_res(b"HTTP/1.1 200\r\n\r\n").unwrap();
    assert_eq!(h.reason(), "");
    let (h, _) = parse_res(b"HTTP/1.1 200 \r\n\r\n").unwrap();
    assert_eq!(h.reason(), "");
    // Bare LF is tolerated in responses (RFC 9112 §2.2 MAY).
    let (h, n) = parse_res(b"HTTP/1.1 204 No Content\nX: y\n\n").unwrap();
    assert_eq!((h.status, n), (204, 30));
    assert_eq!(h.headers.get("x"), Some(&b"y"[..]));
    // ... but bare CR is not.
    assert!(matches!(parse_res(b"HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n"), Err(H1Error::BadUpstreamResponse(_))));
}

#[test]
fn bad_responses_are_502() {
    for bad in [
        &b"HTTP/1.1 2000 OK\r\n\r\n"[..],
        b"HTTP/1.1 20 OK\r\n\r\n",
        b"HTTP/1.1 099 X\r\n\r\n",
        b"HTTP/1.1 600 X\r\n\r\n",
        b"HTTP/1.1 2x0 OK\r\n\r\n",
        b"HTTP/2.0 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX : a\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: \x01\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        b"ICY 200 OK\r\n\r\n",
    ] {
        let e = parse_res(bad).map(|_| ()).unwrap_err();
        assert_eq!(e.status(), 502, "{:?}: {e}", String::from_utf8_lossy(bad));
        assert!(matches!(e, H1Error::BadUpstreamResponse(_)));
    }
    let long = format!("HTTP/1.1 200 {}\r\n\r\n", "x".repeat(9000));
    assert_eq!(parse_res(long.as_bytes()).map(|_| ()).unwrap_err().status(), 502);
    let mut head = ResponseHead::new();
    let partial = format!("HTTP/1.1 200 {}", "x".repeat(9000));
    assert_eq!(parse_response_head(partial.as_bytes(), &limits(), &mut head).unwrap_err().status(), 502);
}

#[test]
fn response_body_kinds() {
    let r = |s: &str| format!("HTTP/1.1 {s}\r\n\r\n").into_bytes();
    // §6.3 item 1: no body whatever the fields say.
    assert_eq!(res_kind(&r("204 No Content\r\nContent-Length: 5"), false), Ok(BodyKind::Empty));
    assert_eq!(res_kind(&r("304 Not Modified\r\nContent-Length: 5"), false), Ok(BodyKind::Empty));
    assert_eq!(res_kind(&r("100 Continue"), false), Ok(BodyKind::Empty));
    assert_eq!(res_kind(&r("101 Switching Protocols"), false), Ok(BodyKind::Empty));
    assert_eq!(res_kind(&r("200 OK\r\nContent-Length: 5"), true), Ok(BodyKind::Empty));
    assert_eq!(res_kind(&r("200 OK\r\nTransfer-Encoding: chunked"), true), Ok(BodyKind::Empty));
    // §6.3 item 2: CONNECT 2xx is a tunnel.
    let (h, _) = parse_res(&r("200 Connection Established")).unwrap();
    assert_eq!(response_body_kind_for(Method::Connect, &h), Ok(BodyKind::CloseDelimited));
    let (h, _) = parse_res(&r("407 Auth\r\nContent-Length: 2")).unwrap();
    assert_eq!(response_body_kind_for(Method::Connect, &h), Ok(BodyKind::Length(2)));
    // Items 3-7.
    assert_eq!(res_kind(&r("200 OK\r\nTransfer-Encoding: chunked"), false), Ok(BodyKind::Chunked));
    assert_eq!(res_kind(&r("200 OK\r\nContent-Length: 0"), false), Ok(BodyKind::Length(0)));
    assert_eq!(res_kind(&r("200 OK"), false), Ok(BodyKind::CloseDelimited));
    assert_eq!(res_kind(&r("404 Not Found"), false), Ok(BodyKind::CloseDelimited));
    // TE wins over CL, and the CL is removed.
    let (h, _) = parse_res(&r("200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked")).unwrap();
    assert!(!h.headers.contains("content-length"));
    assert_eq!(response_body_kind(false, &h), Ok(BodyKind::Chunked));
    // Repeated identical CLs collapse.
    let (h, _) = parse_res(&r("200 OK\r\nContent-Length: 3\r\nContent-Length: 3")).unwrap();
    assert_eq!(h.headers.count("content-length"), 1);
    assert_eq!(response_body_kind(false, &h), Ok(BodyKind::Length(3)));
    // Codings meshgate cannot forward, and TE in HTTP/1.0.
    for bad in [
        "200 OK\r\nTransfer-Encoding: gzip",
        "200 OK\r\nTransfer-Encoding: gzip, chunked",
        "200 OK\r\nTransfer-Encoding: chunked, chunked",
    ] {
        assert_eq!(res_kind(&r(bad), false).unwrap_err().status(), 502, "{bad}");
    }
    let e = res_kind(b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false).unwrap_err();
    assert_eq!(e.status(), 502);
}

// ----------------------------------------------------- incremental parsing

/// Feeds `buf` one byte at a time into one head; returns the first
/// non-`Ok(None)` result.
fn parse_bytewise(buf: &[u8], l: &Limits) -> (Result<Option<usize>, H1Error>, RequestHead) {
    let mut head = RequestHead::new();
    for n in 1..=buf.len() {
        match parse_request_head(&buf[..n], l, &mut head) {
            Ok(None) => continue,
            other => return (other, head),
        }
    }
    (Ok(None), head)
}

fn same_head(a: &RequestHead, b: &RequestHead) {
    assert_eq!(a.method_str(), b.method_str());
    assert_eq!(a.target(), b.target());
    assert_eq!(a.path_and_query(), b.path_and_query());
    assert_eq!(a.version, b.version);
    assert_eq!(a.headers.iter().collect::<Vec<_>>(), b.headers.iter().collect::<Vec<_>>());
}

#[test]
fn bytewise_parsing_matches_whole_buffer() {
    let inputs: Vec<Vec<u8>> = vec![
        get("X-A: 1\r\nContent-Length: 5, 5\r\n"),
        b"\r\n\r\nPOST http://a.com/x?y HTTP/1.1\r\nHost: b\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
        b"GET / HTTP/1.0\r\n\r\n".to_vec(),
        get("X: a\r\n b\r\n"),
        get("X: a\rb\r\n"),
        b"GET / HTTP/1.1\r\nHost: a\n\n".to_vec(),
        get("X : a\r\n"),
        get("X: \x01\r\n"),
        b"GET / HTTP/2.0\r\nHost: a\r\n\r\n".to_vec(),
        b"GET /\r\n".to_vec(),
        format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(9000)).into_bytes(),
        get(&format!("X: {}\r\n", "b".repeat(62 * 1024))),
        get(&(0..120).map(|i| format!("X-{i}: v\r\n")).collect::<String>()),
        get("Content-Length: 1\r\nContent-Length: 2\r\n"),
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        b"\x16\x03\x01\x00".to_vec(),
    ];
    for buf in &inputs {
        let mut whole = RequestHead::new();
        let a = parse_request_head(buf, &limits(), &mut whole);
        let (b, bytewise) = parse_bytewise(buf, &limits());
        assert_eq!(a, b, "{:?}", String::from_utf8_lossy(&buf[..buf.len().min(80)]));
        if let Ok(Some(_)) = a {
            same_head(&whole, &bytewise);
        }
    }
}

#[test]
fn head_is_reused_without_growing() {
    let buf = get("User-Agent: curl/8.0\r\nAccept: */*\r\nX-Request-Id: 1234\r\n");
    let mut head = RequestHead::new();
    parse_request_head(&buf, &limits(), &mut head).unwrap();
    let caps = head.capacities();
    for _ in 0..10 {
        head.clear();
        parse_request_head(&buf, &limits(), &mut head).unwrap();
        // No clear() needed either: a successful parse resets the head.
        parse_request_head(&buf, &limits(), &mut head).unwrap();
        assert_eq!(head.capacities(), caps);
    }
    assert_eq!(head.headers.len(), 4);
}

#[test]
fn scan_state_resets_for_a_different_buffer() {
    let mut head = RequestHead::new();
    assert_eq!(parse_request_head(b"GET / HTTP/1.1\r\nHost: a\r\n", &limits(), &mut head), Ok(None));
    // A shorter, unrelated buffer: the stale scan offset is discarded.
    let buf = get("");
    head.clear();
    assert_eq!(parse_request_head(&buf, &limits(), &mut head), Ok(Some(buf.len())));
    let mut head = RequestHead::new();
    assert_eq!(parse_request_head(b"GET / HTTP/1.1\r\nHost: a\r\nX: 1234567890\r\n", &limits(), &mut head), Ok(None));
    assert_eq!(parse_request_head(&buf, &limits(), &mut head), Ok(Some(buf.len())));
}

// -------------------------------------------------------------- pipelining

#[test]
fn pipelined_requests_in_one_buffer() {
    let buf = b"POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n\
3;x=y\r\nabc\r\n0\r\nX-T: 1\r\n\r\n\
PUT /b HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nwxyz\
\r\nGET /c HTTP/1.1\r\nHost: h\r\n\r\n";
    let mut rest: &[u8] = buf;
    let mut head = RequestHead::new();
    let mut seen = Vec::new();
    while !rest.is_empty() {
        let n = parse_request_head(rest, &limits(), &mut head).unwrap().unwrap();
        rest = &rest[n..];
        let mut dec = BodyDecoder::new(request_body_kind(&head).unwrap());
        let mut body = Vec::new();
        let mut trailers = Vec::new();
        loop {
            let (n, ev) = dec.decode(rest).unwrap();
            match ev {
                Decoded::Data(d) => body.extend_from_slice(d),
                Decoded::End { trailers: t } => {
                    trailers.extend_from_slice(t);
                    rest = &rest[n..];
                    break;
                }
                Decoded::NeedMore => panic!("everything is in the buffer"),
            }
            rest = &rest[n..];
        }
        assert!(dec.is_done());
        seen.push((head.method_str().to_owned(), head.target_str().to_owned(), body, trailers));
    }
    assert_eq!(
        seen,
        vec![
            ("POST".into(), "/a".into(), b"abc".to_vec(), b"X-T: 1\r\n".to_vec()),
            ("PUT".into(), "/b".into(), b"wxyz".to_vec(), vec![]),
            ("GET".into(), "/c".into(), vec![], vec![]),
        ]
    );
}

// ------------------------------------------------------------------ bodies

/// Decodes `parts` as they would arrive from a socket: appended to a buffer
/// the decoder consumes from.  Returns (data, trailers).
fn decode_parts(kind: BodyKind, parts: &[&[u8]]) -> Result<(Vec<u8>, Vec<u8>), H1Error> {
    let mut dec = BodyDecoder::new(kind);
    let mut buf: Vec<u8> = Vec::new();
    let mut data = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        buf.extend_from_slice(part);
        loop {
            let (n, ev) = dec.decode(&buf)?;
            let mut done = None;
            let stop = match ev {
                Decoded::Data(d) => {
                    assert!(!d.is_empty());
                    data.extend_from_slice(d);
                    false
                }
                Decoded::End { trailers } => {
                    done = Some(trailers.to_vec());
                    true
                }
                Decoded::NeedMore => true,
            };
            buf.drain(..n);
            if let Some(t) = done {
                assert!(dec.is_done());
                assert!(i == parts.len() - 1 || parts[i + 1..].iter().all(|p| p.is_empty()));
                return Ok((data, t));
            }
            if stop {
                break;
            }
        }
    }
    dec.decode_eof()?;
    Ok((data, Vec::new()))
}

const CHUNKED: &[u8] = b"5;name=value;q=\"a;b\"\r\nhello\r\n1 ; x\r\n \r\n\
A\r\n0123456789\r\n0;last\r\nX-Trailer: one\r\nX-Other:\ttwo \r\n\r\n";

#[test]
fn chunked_with_extensions_and_trailers() {
    let (data, trailers) = decode_parts(BodyKind::Chunked, &[CHUNKED]).unwrap();
    assert_eq!(data, b"hello 0123456789");
    assert_eq!(trailers, b"X-Trailer: one\r\nX-Other:\ttwo \r\n");
    let (data, trailers) = decode_parts(BodyKind::Chunked, &[b"0\r\n\r\n"]).unwrap();
    assert!(data.is_empty() && trailers.is_empty());
    let (data, _) = decode_parts(BodyKind::Chunked, &[b"000\r\n\r\n"]).unwrap();
    assert!(data.is_empty());
    let (data, _) = decode_parts(BodyKind::Chunked, &[b"fF\r\n", &[b'x'; 255], b"\r\n0\r\n\r\n"]).unwrap();
    assert_eq!(data.len(), 255);
}

#[test]
fn chunked_split_at_every_boundary() {
    let whole = decode_parts(BodyKind::Chunked, &[CHUNKED]).unwrap();
    for i in 0..=CHUNKED.len() {
        let got = decode_parts(BodyKind::Chunked, &[&CHUNKED[..i], &CHUNKED[i..]]).unwrap();
        assert_eq!(got, whole, "split at {i}");
        for j in i..=CHUNKED.len() {
            let got = decode_parts(BodyKind::Chunked, &[&CHUNKED[..i], &CHUNKED[i..j], &CHUNKED[j..]]).unwrap();
            assert_eq!(got, whole, "split at {i},{j}");
        }
    }
    let bytes: Vec<&[u8]> = CHUNKED.chunks(1).collect();
    assert_eq!(decode_parts(BodyKind::Chunked, &bytes).unwrap(), whole);
}

#[test]
fn chunked_errors() {
    let cases: &[&[u8]] = &[
        b"x\r\n",
        b"\r\n",
        b";ext\r\n",
        b"-5\r\n",
        b"0x5\r\n",
        b"11111111111111111\r\n",
        b"00000000000000001\r\n",
        b"5\nhello\r\n",
        b"5\r\rhello",
        b"5 \r\nhello\r\n",
        b"5\r\nhelloXX",
        b"5\r\nhello\n0\r\n\r\n",
        b"5\r\nhello\r\r",
        b"5;a\x01\r\n",
        b"5;a\nb\r\n",
        b"0\r\nX: a\r\n b\r\n\r\n",
        b"0\r\nX: a\n\r\n",
        b"0\r\n\n",
        b"0\r\nX: a\rb\r\n\r\n",
        b"0\r\nNoColon\r\n\r\n",
        b"0\r\nX : a\r\n\r\n",
        b"0\r\n: a\r\n\r\n",
        b"0\r\nX: \x00\r\n\r\n",
    ];
    for c in cases {
        let e = decode_parts(BodyKind::Chunked, &[c]).unwrap_err();
        assert_eq!(e.status(), 400, "{:?}: {e:?}", String::from_utf8_lossy(c));
        // And fed bytewise, the same error.
        let bytes: Vec<&[u8]> = c.chunks(1).collect();
        assert_eq!(decode_parts(BodyKind::Chunked, &bytes).unwrap_err(), e);
    }
    // Sixteen digits are fine (the data just isn't there).
    assert_eq!(decode_parts(BodyKind::Chunked, &[b"ffffffffffffffff\r\nabc"]), Err(H1Error::IncompleteBody));
    // Extensions are bounded.
    let long_ext = [&b"1;"[..], &[b'a'; 5000], b"\r\nx\r\n0\r\n\r\n"].concat();
    assert_eq!(decode_parts(BodyKind::Chunked, &[&long_ext]), Err(H1Error::BadChunk("chunk extension too long")));
    let ok_ext = [&b"1;"[..], &[b'a'; 4000], b"\r\nx\r\n0\r\n\r\n"].concat();
    assert_eq!(decode_parts(BodyKind::Chunked, &[&ok_ext]).unwrap().0, b"x");
}

#[test]
fn trailers_are_bounded() {
    let big = [&b"0\r\nX: "[..], &vec![b'a'; 70 * 1024], b"\r\n\r\n"].concat();
    assert_eq!(decode_parts(BodyKind::Chunked, &[&big]), Err(H1Error::TrailersTooLarge));
    // Also before the section completes.
    let partial = [&b"0\r\nX: "[..], &vec![b'a'; 70 * 1024]].concat();
    let mut dec = BodyDecoder::new(BodyKind::Chunked);
    assert_eq!(dec.decode(&partial), Err(H1Error::TrailersTooLarge));
    assert_eq!(H1Error::TrailersTooLarge.status(), 431);
    // With custom limits.
    let l = Limits { max_head_bytes: 16, ..limits() };
    let mut dec = BodyDecoder::with_limits(BodyKind::Chunked, &l);
    assert_eq!(dec.decode(b"0\r\nX: 0123456789abcdef\r\n\r\n"), Err(H1Error::TrailersTooLarge));
    let mut dec = BodyDecoder::with_limits(BodyKind::Chunked, &l);
    assert_eq!(dec.decode(b"0\r\nX: 0123456789\r\n\r\n"), Ok((20, Decoded::End { trailers: b"X: 0123456789\r\n" })));
}

#[test]
fn trailer_section_waits_without_consuming() {
    let mut dec = BodyDecoder::new(BodyKind::Chunked);
    let (n, ev) = dec.decode(b"0\r\nX-A: 1\r\nX-B").unwrap();
    assert_eq!((n, ev), (3, Decoded::NeedMore));
    let (n, ev) = dec.decode(b"X-A: 1\r\nX-B").unwrap();
    assert_eq!((n, ev), (0, Decoded::NeedMore));
    let (n, ev) = dec.decode(b"X-A: 1\r\nX-B: 2\r\n\r\nNEXT").unwrap();
    assert_eq!((n, ev), (18, Decoded::End { trailers: b"X-A: 1\r\nX-B: 2\r\n" }));
    assert!(dec.is_done());
    assert_eq!(dec.decode(b"NEXT").unwrap(), (0, Decoded::End { trailers: b"" }));
}

#[test]
fn length_bodies() {
    let whole = b"hello world";
    for i in 0..=whole.len() {
        let got = decode_parts(BodyKind::Length(11), &[&whole[..i], &whole[i..]]).unwrap();
        assert_eq!(got.0, whole);
    }
    let mut dec = BodyDecoder::new(BodyKind::Length(3));
    assert_eq!(dec.decode(b"").unwrap(), (0, Decoded::NeedMore));
    assert_eq!(dec.decode(b"ab").unwrap(), (2, Decoded::Data(b"ab")));
    assert!(!dec.is_done());
    assert_eq!(dec.remaining_hint(), Some(1));
    assert_eq!(dec.decode(b"cGET").unwrap(), (1, Decoded::Data(b"c")));
    assert!(dec.is_done());
    assert_eq!(dec.decode(b"GET").unwrap(), (0, Decoded::End { trailers: b"" }));
    assert_eq!(dec.decode_eof(), Ok(()));

    let mut dec = BodyDecoder::new(BodyKind::Length(3));
    dec.decode(b"ab").unwrap();
    assert_eq!(dec.decode_eof(), Err(H1Error::IncompleteBody));

    for kind in [BodyKind::Empty, BodyKind::Length(0)] {
        let mut dec = BodyDecoder::new(kind);
        assert!(dec.is_done());
        assert_eq!(dec.decode(b"GET /").unwrap(), (0, Decoded::End { trailers: b"" }));
    }
}

#[test]
fn close_delimited_and_eof() {
    let mut dec = BodyDecoder::new(BodyKind::CloseDelimited);
    assert_eq!(dec.decode(b"").unwrap(), (0, Decoded::NeedMore));
    assert_eq!(dec.decode(b"abc").unwrap(), (3, Decoded::Data(b"abc")));
    assert!(!dec.is_done());
    assert_eq!(dec.decode_eof(), Ok(()));
    assert!(dec.is_done());

    let mut dec = BodyDecoder::new(BodyKind::Chunked);
    dec.decode(b"5\r\nhel").unwrap();
    assert_eq!(dec.decode_eof(), Err(H1Error::IncompleteBody));
    let mut dec = BodyDecoder::new(BodyKind::Chunked);
    dec.decode(b"0\r\n").unwrap();
    assert_eq!(dec.decode_eof(), Err(H1Error::IncompleteBody));
    assert_eq!(H1Error::IncompleteBody.status(), 400);
}

mod props {
    use super::*;
    use proptest::prelude::*;

    fn encode_chunked(chunks: &[Vec<u8>], ext: bool, trailers: &[(String, String)]) -> Vec<u8> {
        let mut out = Vec::new();
        for c in chunks.iter().filter(|c| !c.is_empty()) {
            let mut head = Vec::new();
            encode_chunk_header(c.len(), &mut head);
            if ext {
                head.truncate(head.len() - 2);
                head.extend_from_slice(b" ; e=\"v;\" ;f\r\n");
            }
            out.extend_from_slice(&head);
            out.extend_from_slice(c);
            out.extend_from_slice(b"\r\n");
        }
        let t: String = trailers.iter().map(|(n, v)| format!("{n}: {v}\r\n")).collect();
        encode_last_chunk(t.as_bytes(), &mut out);
        out
    }

    proptest! {
        #[test]
        fn random_splits_decode_identically(
            chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..8),
            ext in any::<bool>(),
            trailers in prop::collection::vec(("[A-Za-z][A-Za-z0-9-]{0,10}", "[ -~]{0,20}"), 0..3),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
        ) {
            let wire = encode_chunked(&chunks, ext, &trailers);
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
            points.sort_unstable();
            let mut parts = Vec::new();
            let mut prev = 0;
            for p in points {
                parts.push(&wire[prev..p]);
                prev = p;
            }
            parts.push(&wire[prev..]);
            let (data, got_trailers) = decode_parts(BodyKind::Chunked, &parts).unwrap();
            prop_assert_eq!(data, chunks.concat());
            // Trailer values are OWS-trimmed by nobody: they come back raw.
            let want: String = trailers.iter().map(|(n, v)| format!("{n}: {v}\r\n")).collect();
            prop_assert_eq!(got_trailers, want.into_bytes());
        }

        #[test]
        fn request_heads_parse_identically_when_split(
            cut in any::<prop::sample::Index>(),
            extra in prop::collection::vec(("[a-z][a-z0-9-]{0,12}", "[!-~]([ -~]{0,30}[!-~])?"), 0..10),
        ) {
            let fields: String = extra.iter().map(|(n, v)| format!("x-{n}: {v}\r\n")).collect();
            let buf = get(&fields);
            let whole = ok_req(&buf);
            let at = cut.index(buf.len());
            let mut head = RequestHead::new();
            prop_assert_eq!(parse_request_head(&buf[..at], &limits(), &mut head), Ok(None));
            prop_assert_eq!(parse_request_head(&buf, &limits(), &mut head), Ok(Some(buf.len())));
            same_head(&whole, &head);
        }
    }
}

// ---------------------------------------------------------------- encoding

#[test]
fn request_round_trip() {
    let mut h = Headers::new();
    h.append("Host", b"example.com");
    h.append("X-Multi", b"a");
    h.append("x-multi", b"b, c");
    h.append("Content-Length", b"0");
    let mut out = Vec::new();
    encode_request_head("PATCH", b"/p?q=1", &h, &mut out);
    assert_eq!(
        out,
        b"PATCH /p?q=1 HTTP/1.1\r\nhost: example.com\r\nx-multi: a\r\nx-multi: b, c\r\ncontent-length: 0\r\n\r\n"
    );
    let back = ok_req(&out);
    assert_eq!(back.method, Method::Patch);
    assert_eq!(back.target(), b"/p?q=1");
    assert_eq!(back.headers.iter().collect::<Vec<_>>(), h.iter().collect::<Vec<_>>());

    // Parse → encode → parse is a fixed point.
    let orig = ok_req(b"GET /x HTTP/1.1\r\nHost: h\r\nAccept: */*\r\nX-Empty:\r\n\r\n");
    let mut out = Vec::new();
    encode_request_head(orig.method_str(), orig.path_and_query(), &orig.headers, &mut out);
    same_head(&orig, &ok_req(&out));
}

#[test]
fn response_round_trip() {
    let mut h = Headers::new();
    h.append("Content-Length", b"2");
    h.append("Server", b"meshgate");
    let mut out = Vec::new();
    encode_response_head(404, "", &h, &mut out);
    assert_eq!(out, b"HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\nserver: meshgate\r\n\r\n");
    let (back, n) = parse_res(&out).unwrap();
    assert_eq!((back.status, back.reason(), n), (404, "Not Found", out.len()));
    assert_eq!(back.headers.iter().collect::<Vec<_>>(), h.iter().collect::<Vec<_>>());

    out.clear();
    encode_response_head(200, "Fine", &Headers::new(), &mut out);
    assert_eq!(out, b"HTTP/1.1 200 Fine\r\n\r\n");
    out.clear();
    encode_response_head(599, "", &Headers::new(), &mut out);
    assert_eq!(out, b"HTTP/1.1 599 \r\n\r\n");
    let (back, _) = parse_res(&out).unwrap();
    assert_eq!((back.status, back.reason()), (599, ""));
}

#[test]
fn chunk_encoding_round_trip() {
    let mut out = Vec::new();
    encode_chunk_header(5, &mut out);
    out.extend_from_slice(b"hello\r\n");
    encode_chunk_header(0x1a2b, &mut out);
    out.extend_from_slice(&[b'z'; 0x1a2b]);
    out.extend_from_slice(b"\r\n");
    encode_last_chunk(b"x-t: 1\r\n", &mut out);
    assert!(out.starts_with(b"5\r\nhello\r\n1a2b\r\n"));
    assert!(out.ends_with(b"\r\n0\r\nx-t: 1\r\n\r\n"));
    let (data, trailers) = decode_parts(BodyKind::Chunked, &[&out]).unwrap();
    assert_eq!(data.len(), 5 + 0x1a2b);
    assert_eq!(trailers, b"x-t: 1\r\n");
    out.clear();
    encode_last_chunk(b"", &mut out);
    assert_eq!(out, b"0\r\n\r\n");
}

#[test]
fn canonical_reasons() {
    assert_eq!(canonical_reason(200), "OK");
    assert_eq!(canonical_reason(413), "Content Too Large");
    assert_eq!(canonical_reason(431), "Request Header Fields Too Large");
    assert_eq!(canonical_reason(505), "HTTP Version Not Supported");
    assert_eq!(canonical_reason(299), "");
}

#[test]
fn error_statuses_and_display() {
    assert_eq!(H1Error::RequestLineTooLong.status(), 414);
    assert_eq!(H1Error::HeadTooLarge.status(), 431);
    assert_eq!(H1Error::TooManyHeaders.status(), 431);
    assert_eq!(H1Error::UnsupportedTransferCoding.status(), 501);
    assert_eq!(H1Error::UnsupportedVersion.status(), 505);
    assert_eq!(H1Error::BadUpstreamResponse("x").status(), 502);
    assert_eq!(H1Error::BareCr.status(), 400);
    assert_eq!(H1Error::BareCr.to_string(), "bare CR in message head (400)");
    assert_eq!(
        H1Error::BadUpstreamResponse("status code outside 100..=599").to_string(),
        "invalid upstream response: status code outside 100..=599"
    );
    assert_eq!(Limits::default(), Limits { max_request_line: 8192, max_head_bytes: 61440, max_headers: 100 });
}
