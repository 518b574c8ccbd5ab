//! The API's JSON writer and parser.

use proptest::prelude::*;
use zone_sync_core::api::json::{
    self, parse, parse_with_max_depth, write_str, write_value, ErrorKind, ObjectWriter, Value,
    MAX_DEPTH,
};

fn enc(s: &[u8]) -> String {
    let mut out = Vec::new();
    write_str(&mut out, s);
    String::from_utf8(out).expect("writer output is UTF-8")
}

fn kind(input: &[u8]) -> ErrorKind {
    parse(input).expect_err("must fail").kind
}

fn s(v: &[u8]) -> Value {
    Value::String(v.to_vec())
}

fn num(n: &str) -> Value {
    Value::Number(n.into())
}

// ---- writer -------------------------------------------------------------

#[test]
fn writer_escapes_quotes_backslash_and_controls() {
    assert_eq!(enc(b""), r#""""#);
    assert_eq!(enc(b"plain"), r#""plain""#);
    assert_eq!(enc(b"a\"b\\c/d"), r#""a\"b\\c/d""#);
    assert_eq!(enc(b"\n\r\t\x08\x0c"), r#""\n\r\t\b\f""#);
    assert_eq!(enc(b"\x00\x01\x1f\x7f"), r#""\u0000\u0001\u001f\u007f""#);
}

#[test]
fn writer_keeps_valid_utf8_raw() {
    assert_eq!(enc("ÿ€😀".as_bytes()), "\"ÿ€😀\"");
    // U+2028 is valid JSON as is.
    assert_eq!(enc("\u{2028}".as_bytes()), "\"\u{2028}\"");
}

#[test]
fn writer_escapes_each_invalid_byte_as_latin1() {
    assert_eq!(enc(b"\xff"), r#""\u00ff""#);
    assert_eq!(enc(b"a\xffb\xfe"), r#""a\u00ffb\u00fe""#);
    // A truncated sequence at the end.
    assert_eq!(enc(b"x\xe2\x82"), r#""x\u00e2\u0082""#);
    // A truncated sequence in the middle, then valid text.
    assert_eq!(enc(b"\xe2\x82z\xe2\x82\xac"), "\"\\u00e2\\u0082z€\"");
    // Overlong encoding of '/', UTF-8-encoded surrogate, beyond U+10FFFF.
    assert_eq!(enc(b"\xc0\xaf"), r#""\u00c0\u00af""#);
    assert_eq!(enc(b"\xed\xa0\x80"), r#""\u00ed\u00a0\u0080""#);
    assert_eq!(enc(b"\xf4\x90\x80\x80"), r#""\u00f4\u0090\u0080\u0080""#);
    // A lone continuation byte.
    assert_eq!(enc(b"\x80"), r#""\u0080""#);
}

#[test]
fn writer_output_of_every_byte_is_valid_json_and_utf8() {
    let all: Vec<u8> = (0..=255u8).collect();
    let out = enc(&all);
    let back = parse(out.as_bytes()).expect("valid JSON");
    // Bytes below 0x80 come back as they were.
    let Value::String(b) = back else { panic!() };
    assert_eq!(&b[..0x80], &all[..0x80]);
}

#[test]
fn object_writer_places_commas() {
    let mut out = Vec::new();
    let mut o = ObjectWriter::new(&mut out);
    o.str_member(b"a", b"x");
    o.u64_member(b"b", u64::MAX);
    let inner = ObjectWriter::new(o.member(b"c"));
    inner.finish();
    o.finish();
    assert_eq!(out, br#"{"a":"x","b":18446744073709551615,"c":{}}"#);
    let mut out = Vec::new();
    ObjectWriter::new(&mut out).finish();
    assert_eq!(out, b"{}");
}

#[test]
fn write_value_is_compact() {
    let v = Value::Object(vec![
        (
            b"a".to_vec(),
            Value::Array(vec![num("1"), num("-2.5e3"), Value::Null]),
        ),
        (b"b".to_vec(), Value::Bool(true)),
        (b"c".to_vec(), Value::Bool(false)),
        (b"\xff".to_vec(), s(b"\"")),
    ]);
    let mut out = Vec::new();
    write_value(&mut out, &v);
    assert_eq!(
        std::str::from_utf8(&out).unwrap(),
        r#"{"a":[1,-2.5e3,null],"b":true,"c":false,"\u00ff":"\""}"#
    );
    // A hand-made non-number is not written as is.
    let mut out = Vec::new();
    write_value(&mut out, &num("1,2"));
    assert_eq!(out, b"null");
}

// ---- parser: accepted input ---------------------------------------------

#[test]
fn parses_scalars() {
    assert_eq!(parse(b"null"), Ok(Value::Null));
    assert_eq!(parse(b"true"), Ok(Value::Bool(true)));
    assert_eq!(parse(b" \t\r\nfalse\n"), Ok(Value::Bool(false)));
    for n in [
        "0",
        "-0",
        "12",
        "-12",
        "0.5",
        "1e9",
        "1E+9",
        "1e-9",
        "-1.25E-10",
    ] {
        assert_eq!(parse(n.as_bytes()), Ok(num(n)), "{n}");
    }
    assert_eq!(parse(br#""""#), Ok(s(b"")));
}

#[test]
fn numbers_keep_their_text_whatever_their_size() {
    let huge = format!("{}e999999", "9".repeat(5000));
    assert_eq!(parse(huge.as_bytes()), Ok(num(&huge)));
}

#[test]
fn parses_containers_in_order_with_duplicates() {
    assert_eq!(parse(b"[]"), Ok(Value::Array(vec![])));
    assert_eq!(parse(b"{}"), Ok(Value::Object(vec![])));
    assert_eq!(
        parse(b" [ 1 , [ ] , { } ] "),
        Ok(Value::Array(vec![
            num("1"),
            Value::Array(vec![]),
            Value::Object(vec![]),
        ]))
    );
    assert_eq!(
        parse(br#"{"b":1,"a":2,"b":3}"#),
        Ok(Value::Object(vec![
            (b"b".to_vec(), num("1")),
            (b"a".to_vec(), num("2")),
            (b"b".to_vec(), num("3")),
        ]))
    );
}

#[test]
fn decodes_escapes() {
    assert_eq!(
        parse(br#""\"\\\/\b\f\n\r\t""#),
        Ok(s(b"\"\\/\x08\x0c\n\r\t"))
    );
    assert_eq!(parse(br#""\u0041\u00e9\u20AC""#), Ok(s("Aé€".as_bytes())));
    assert_eq!(parse(br#""\u0000""#), Ok(s(b"\0")));
    // Surrogate pair, upper and lower case hex.
    assert_eq!(parse(br#""\uD83D\uDE00""#), Ok(s("😀".as_bytes())));
    assert_eq!(parse(br#""\ud83d\ude00x""#), Ok(s("😀x".as_bytes())));
    assert_eq!(parse(br#""\uDBFF\uDFFF""#), Ok(s("\u{10FFFF}".as_bytes())));
}

#[test]
fn raw_bytes_in_strings_pass_through() {
    assert_eq!(parse(b"\"\xff\xfe\""), Ok(s(b"\xff\xfe")));
    assert_eq!(parse("\"é😀\"".as_bytes()), Ok(s("é😀".as_bytes())));
    assert_eq!(parse(b"\"\x7f\""), Ok(s(b"\x7f")));
}

#[test]
fn nesting_up_to_the_limit_is_fine() {
    let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
    assert!(parse(ok.as_bytes()).is_ok());
    let ok = format!("{}1{}", r#"{"a":"#.repeat(MAX_DEPTH), "}".repeat(MAX_DEPTH));
    assert!(parse(ok.as_bytes()).is_ok());
}

// ---- parser: rejected input ---------------------------------------------

#[test]
fn rejects_empty_and_trailing_data() {
    assert_eq!(kind(b""), ErrorKind::Empty);
    assert_eq!(kind(b" \n\t "), ErrorKind::Empty);
    assert_eq!(kind(b"{} x"), ErrorKind::TrailingData);
    assert_eq!(kind(b"{}{}"), ErrorKind::TrailingData);
    assert_eq!(kind(b"1 2"), ErrorKind::TrailingData);
    assert_eq!(
        kind(b"\xef\xbb\xbf{}"),
        ErrorKind::UnexpectedByte(0xef),
        "BOM"
    );
    assert_eq!(kind(b"{}\0"), ErrorKind::TrailingData);
}

#[test]
fn rejects_bad_structure() {
    for bad in [
        &b"{,}"[..],
        b"[,]",
        b"[1,]",
        br#"{"a":1,}"#,
        br#"{"a" 1}"#,
        br#"{"a":}"#,
        b"{a:1}",
        b"{'a':1}",
        b"[1 2]",
        br#"{"a":1 "b":2}"#,
        b"]",
        b"}",
        b"nul",
        b"nulL",
        b"True",
        b"undefined",
        b"NaN",
        b"Infinity",
        b"+1",
        b"\x0c{}",
    ] {
        assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
    }
}

#[test]
fn rejects_bad_numbers() {
    for bad in [
        "01", "-01", "00", "1.", "-", ".5", "1e", "1e+", "1.e5", "-.5", "0x10", "1_000",
    ] {
        assert!(parse(bad.as_bytes()).is_err(), "{bad}");
    }
    assert_eq!(kind(b"-"), ErrorKind::InvalidNumber);
    assert_eq!(kind(b"[01]"), ErrorKind::InvalidNumber);
}

#[test]
fn rejects_bad_strings() {
    assert_eq!(kind(b"\"abc"), ErrorKind::UnexpectedEnd);
    assert_eq!(kind(b"\"a\nb\""), ErrorKind::ControlCharInString);
    assert_eq!(kind(b"\"a\tb\""), ErrorKind::ControlCharInString);
    assert_eq!(kind(b"\"\x00\""), ErrorKind::ControlCharInString);
    assert_eq!(kind(br#""\x41""#), ErrorKind::InvalidEscape);
    assert_eq!(kind(br#""\a""#), ErrorKind::InvalidEscape);
    assert_eq!(kind(br#""\'""#), ErrorKind::InvalidEscape);
    assert_eq!(kind(br#""\U0041""#), ErrorKind::InvalidEscape);
    assert_eq!(kind(br#""\u12""#), ErrorKind::InvalidUnicodeEscape);
    assert_eq!(kind(br#""\u12G4""#), ErrorKind::InvalidUnicodeEscape);
    assert_eq!(kind(br#""\u+123""#), ErrorKind::InvalidUnicodeEscape);
    assert_eq!(kind(b"\"\\u12"), ErrorKind::UnexpectedEnd);
    assert_eq!(kind(b"\"\\"), ErrorKind::UnexpectedEnd);
}

#[test]
fn rejects_lone_surrogates() {
    for bad in [
        r#""\uD800""#,
        r#""\uD800x""#,
        r#""\uDBFF\n""#,
        r#""\uD800\u0041""#,
        r#""\uD800\uD800""#,
        r#""\uDC00""#,
        r#""\uDFFF\uD800""#,
    ] {
        assert_eq!(kind(bad.as_bytes()), ErrorKind::LoneSurrogate, "{bad}");
    }
    assert_eq!(kind(b"\"\\uD800\\u"), ErrorKind::UnexpectedEnd);
}

#[test]
fn every_truncation_of_a_document_fails() {
    let doc = br#" {"k":"v\u00e9\uD83D\uDE00","n":[-1.5e3,true,false,null,{"x":{}}],"e":{"value":"v","expire":1000}} "#;
    assert!(parse(doc).is_ok());
    let trimmed = doc.trim_ascii_end();
    for cut in 0..trimmed.len() {
        assert!(
            parse(&trimmed[..cut]).is_err(),
            "prefix of {cut} bytes parsed: {:?}",
            String::from_utf8_lossy(&trimmed[..cut])
        );
    }
}

#[test]
fn deep_nesting_is_refused_early_without_overflow() {
    let deep = vec![b'['; 100_000];
    let e = parse(&deep).unwrap_err();
    assert_eq!(e.kind, ErrorKind::TooDeep);
    assert_eq!(e.offset, MAX_DEPTH);
    let deep = r#"{"a":"#.repeat(100_000);
    assert_eq!(kind(deep.as_bytes()), ErrorKind::TooDeep);
    let closed = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
    assert_eq!(kind(closed.as_bytes()), ErrorKind::TooDeep);
    // The hard ceiling holds whatever the caller asks for.
    let deep = vec![b'['; 1_000_000];
    assert_eq!(
        parse_with_max_depth(&deep, usize::MAX).unwrap_err().kind,
        ErrorKind::TooDeep
    );
}

#[test]
fn errors_report_offset_and_read_well() {
    let e = parse(br#"{"a":1,"b":x}"#).unwrap_err();
    assert_eq!(e.offset, 11);
    assert_eq!(e.to_string(), "unexpected character \"x\" at offset 11");
    let e = parse(b"[").unwrap_err();
    assert_eq!(e.to_string(), "unexpected end of data at offset 1");
    let e = parse(b"[\x01]").unwrap_err();
    assert_eq!(e.to_string(), "unexpected byte 0x01 at offset 1");
}

#[test]
fn large_inputs_parse_in_linear_time() {
    // 1 MiB string, and an object of 50_000 members.
    let mut big = b"\"".to_vec();
    big.extend(std::iter::repeat_n(b'x', 1 << 20));
    big.push(b'"');
    assert_eq!(parse(&big), Ok(Value::String(vec![b'x'; 1 << 20])));
    let mut obj = String::from("{");
    for i in 0..50_000 {
        if i > 0 {
            obj.push(',');
        }
        obj.push_str(&format!("\"k{i}\":\"v\\n{i}\""));
    }
    obj.push('}');
    let Ok(Value::Object(m)) = parse(obj.as_bytes()) else {
        panic!()
    };
    assert_eq!(m.len(), 50_000);
    assert_eq!(m[49_999], (b"k49999".to_vec(), s(b"v\n49999")));
}

// ---- properties ---------------------------------------------------------

fn value_strategy() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| Value::Number(n.to_string())),
        (any::<i32>(), 0u32..1000, -30i32..30)
            .prop_map(|(i, f, e)| Value::Number(format!("{i}.{f}e{e}"))),
        // Valid UTF-8 only: raw invalid bytes are written as \u00XX, which
        // reads back as U+00XX (documented, not an identity).
        any::<String>().prop_map(|t| Value::String(t.into_bytes())),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((any::<String>().prop_map(String::into_bytes), inner), 0..8)
                .prop_map(Value::Object),
        ]
    })
}

proptest! {
    #[test]
    fn write_then_parse_is_identity(v in value_strategy()) {
        let mut out = Vec::new();
        write_value(&mut out, &v);
        prop_assert!(std::str::from_utf8(&out).is_ok());
        prop_assert_eq!(parse(&out), Ok(v));
    }

    #[test]
    fn any_bytes_write_valid_json(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let mut out = Vec::new();
        write_str(&mut out, &bytes);
        prop_assert!(std::str::from_utf8(&out).is_ok());
        let Ok(Value::String(back)) = parse(&out) else {
            return Err(TestCaseError::fail("not a JSON string"));
        };
        // Decoding maps each invalid byte b to U+00b: compare with that.
        let mut expect = Vec::new();
        let mut rest = &bytes[..];
        loop {
            match std::str::from_utf8(rest) {
                Ok(t) => { expect.extend_from_slice(t.as_bytes()); break; }
                Err(e) => {
                    let (good, after) = rest.split_at(e.valid_up_to());
                    expect.extend_from_slice(good);
                    let n = e.error_len().unwrap_or(after.len());
                    for &b in &after[..n] {
                        let mut buf = [0; 4];
                        expect.extend_from_slice(char::from(b).encode_utf8(&mut buf).as_bytes());
                    }
                    rest = &after[n..];
                }
            }
        }
        prop_assert_eq!(back, expect);
    }

    #[test]
    fn parser_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse(&bytes);
    }

    #[test]
    fn parser_never_panics_on_jsonish(parts in prop::collection::vec(
        prop_oneof![Just("{"), Just("}"), Just("["), Just("]"), Just(","), Just(":"),
                    Just("\""), Just("\\u"), Just("\\uD800"), Just("\\uDC00"), Just("1"),
                    Just("-"), Just("e"), Just("."), Just("null"), Just(" "), Just("a")],
        0..64)) {
        let input: String = parts.concat();
        let _ = parse(input.as_bytes());
    }
}

#[test]
fn json_module_constants() {
    assert_eq!(MAX_DEPTH, 32);
    const { assert!(json::HARD_MAX_DEPTH >= MAX_DEPTH) };
}
