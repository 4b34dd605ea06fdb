//! The part of XML-RPC that supervisord speaks: requests are made and responses read here, on
//! the controller, so the host only has to carry bytes between a command's arguments and
//! supervisord's unix socket (see [`super::supervisor::rpc_command`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use quick_xml::events::Event;

use crate::error::{Error, ErrorKind, Result};

/// An XML-RPC value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `<int>`, `<i4>`, `<i8>`.
    Int(i64),
    /// `<boolean>`.
    Bool(bool),
    /// `<string>` (also `<base64>` and `<dateTime.iso8601>`, kept as written).
    Str(String),
    /// `<double>`.
    Double(f64),
    /// `<array>`.
    Array(Vec<Value>),
    /// `<struct>`.
    Struct(BTreeMap<String, Value>),
    /// `<nil/>`.
    Nil,
}

impl Value {
    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if this is one (booleans count as 0 and 1).
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Self::Int(i) => Some(*i),
            Self::Bool(b) => Some(i64::from(*b)),
            _ => None,
        }
    }

    /// The member `key` of a struct.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Self::Struct(m) => m.get(key),
            _ => None,
        }
    }

    /// The items of an array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Self::Array(a) => Some(a),
            _ => None,
        }
    }

    /// A struct from `(key, value)` pairs.
    pub fn structure<'a>(members: impl IntoIterator<Item = (&'a str, Value)>) -> Self {
        Self::Struct(
            members
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
        )
    }

    /// Appends `<value>...</value>` to `out`.
    ///
    /// # Errors
    /// A string (or struct member name) holding a control character that XML 1.0 cannot carry
    /// (any but tab, line feed and carriage return, which is sent as `&#13;` so that it is not
    /// read back as a line feed), as a `Config` error naming the value; `out` may then hold part
    /// of the value.
    pub fn encode_into(&self, out: &mut String) -> Result<()> {
        out.push_str("<value>");
        match self {
            Self::Int(i) => {
                let _ = write!(out, "<int>{i}</int>");
            }
            Self::Bool(b) => {
                let _ = write!(out, "<boolean>{}</boolean>", u8::from(*b));
            }
            Self::Str(s) => {
                let _ = write!(out, "<string>{}</string>", escape(s)?);
            }
            Self::Double(d) => {
                let _ = write!(out, "<double>{d}</double>");
            }
            Self::Array(items) => {
                out.push_str("<array><data>");
                for v in items {
                    v.encode_into(out)?;
                }
                out.push_str("</data></array>");
            }
            Self::Struct(m) => {
                out.push_str("<struct>");
                for (k, v) in m {
                    let _ = write!(out, "<member><name>{}</name>", escape(k)?);
                    v.encode_into(out)?;
                    out.push_str("</member>");
                }
                out.push_str("</struct>");
            }
            Self::Nil => out.push_str("<nil/>"),
        }
        out.push_str("</value>");
        Ok(())
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Self::Str(s.to_owned())
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Self::Bool(b)
    }
}

/// An XML-RPC fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// `faultCode` (supervisord's codes: 10 `BAD_NAME`, 50 `SPAWN_ERROR`, 60 `ALREADY_STARTED`,
    /// 70 `NOT_RUNNING`, ...).
    pub code: i64,
    /// `faultString` (`BAD_NAME: foo`).
    pub string: String,
}

/// `s` as XML character data. A carriage return becomes `&#13;` (a parser turns a literal one
/// into a line feed); the control characters XML 1.0 has no room for (all but tab, line feed and
/// carriage return; also DEL, the C1 controls, U+FFFE and U+FFFF) are refused.
fn escape(s: &str) -> Result<String> {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#13;"),
            '\t' | '\n' => out.push(c),
            c if c.is_control() || c == '\u{fffe}' || c == '\u{ffff}' => {
                let shown: String = s
                    .chars()
                    .take(80)
                    .collect::<String>()
                    .escape_debug()
                    .to_string();
                return Err(Error::new(
                    ErrorKind::Config,
                    format!("the value `{shown}` holds the control character U+{:04X}, which XML-RPC cannot carry", u32::from(c)),
                )
                .with_hint("remove the control character from the name or value (supervisord program names are plain text)"));
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

/// The body of a `methodCall`.
///
/// # Errors
/// The method name or a string in `params` holds a control character XML cannot carry (see
/// [`Value::encode_into`]).
pub fn call(method: &str, params: &[Value]) -> Result<String> {
    let mut out = String::from("<?xml version=\"1.0\"?><methodCall><methodName>");
    out.push_str(&escape(method)?);
    out.push_str("</methodName><params>");
    for p in params {
        out.push_str("<param>");
        p.encode_into(&mut out)?;
        out.push_str("</param>");
    }
    out.push_str("</params></methodCall>");
    Ok(out)
}

/// The innermost open element.
fn top(stack: &mut [Node]) -> std::result::Result<&mut Node, String> {
    stack.last_mut().ok_or_else(|| "unbalanced XML".into())
}

#[derive(Debug, Default)]
struct Node {
    name: String,
    text: String,
    children: Vec<Node>,
}

impl Node {
    fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }
}

fn tree(xml: &str) -> std::result::Result<Node, String> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut stack = vec![Node::default()];
    loop {
        let ev = reader
            .read_event()
            .map_err(|e| format!("not XML at byte {}: {e}", reader.error_position()))?;
        match ev {
            Event::Start(e) => stack.push(Node {
                name: e.name().as_ref().to_owned(),
                ..Node::default()
            }),
            Event::Empty(e) => {
                let node = Node {
                    name: e.name().as_ref().to_owned(),
                    ..Node::default()
                };
                top(&mut stack)?.children.push(node);
            }
            Event::End(_) => {
                let node = stack.pop().ok_or("unbalanced XML")?;
                top(&mut stack)?.children.push(node);
            }
            // Line ends normalised as XML 1.0 says (a carriage return sent as `&#13;` is a
            // reference, below, and stays one).
            Event::Text(t) => top(&mut stack)?.text.push_str(&t.xml10_content()),
            Event::GeneralRef(r) => {
                let c = match r
                    .resolve_char_ref()
                    .map_err(|e| format!("bad XML character reference: {e}"))?
                {
                    Some(c) => c.to_string(),
                    None => quick_xml::escape::resolve_predefined_entity(&r)
                        .ok_or_else(|| format!("unknown XML entity `&{};`", &*r))?
                        .to_owned(),
                };
                top(&mut stack)?.text.push_str(&c);
            }
            Event::CData(c) => top(&mut stack)?.text.push_str(&c.xml10_content()),
            Event::Eof => break,
            _ => {}
        }
    }
    if stack.len() != 1 {
        return Err("the XML ends inside an element".into());
    }
    stack.pop().ok_or_else(|| "empty XML".to_owned())
}

fn value(node: &Node) -> std::result::Result<Value, String> {
    let Some(inner) = node.children.first() else {
        return Ok(Value::Str(node.text.clone()));
    };
    let num = |t: &str| {
        t.trim()
            .parse::<i64>()
            .map_err(|_| format!("`{t}` is not an integer"))
    };
    Ok(match inner.name.as_str() {
        "int" | "i4" | "i8" => Value::Int(num(&inner.text)?),
        "boolean" => Value::Bool(num(&inner.text)? != 0),
        "string" | "base64" | "dateTime.iso8601" => Value::Str(inner.text.clone()),
        "double" => Value::Double(
            inner
                .text
                .trim()
                .parse()
                .map_err(|_| format!("`{}` is not a number", inner.text))?,
        ),
        "nil" => Value::Nil,
        "array" => {
            let data = inner.child("data").ok_or("<array> without <data>")?;
            Value::Array(
                data.children
                    .iter()
                    .filter(|c| c.name == "value")
                    .map(value)
                    .collect::<std::result::Result<_, _>>()?,
            )
        }
        "struct" => {
            let mut m = BTreeMap::new();
            for member in inner.children.iter().filter(|c| c.name == "member") {
                let name = member
                    .child("name")
                    .ok_or("<member> without <name>")?
                    .text
                    .clone();
                let v = member.child("value").ok_or("<member> without <value>")?;
                m.insert(name, value(v)?);
            }
            Value::Struct(m)
        }
        other => return Err(format!("unknown XML-RPC type <{other}>")),
    })
}

/// Reads a `methodResponse`: `Ok(Ok(value))`, `Ok(Err(fault))`, or `Err(why it is not one)`.
///
/// # Errors
/// The text is not an XML-RPC response (the message says what it found instead).
pub fn parse_response(xml: &str) -> std::result::Result<std::result::Result<Value, Fault>, String> {
    let root = tree(xml)?;
    let resp = root.child("methodResponse").ok_or_else(|| {
        let start: String = xml.trim().chars().take(120).collect();
        format!("not an XML-RPC response: `{start}`")
    })?;
    if let Some(fault) = resp.child("fault") {
        let v = value(fault.child("value").ok_or("<fault> without <value>")?)?;
        return Ok(Err(fault_of(&v).unwrap_or(Fault {
            code: 0,
            string: format!("{v:?}"),
        })));
    }
    let v = resp
        .child("params")
        .and_then(|p| p.child("param"))
        .and_then(|p| p.child("value"))
        .ok_or("<methodResponse> without a value")?;
    Ok(Ok(value(v)?))
}

/// The fault a multicall result (or a fault value) stands for, if it is one.
pub fn fault_of(v: &Value) -> Option<Fault> {
    let code = v.get("faultCode")?.as_i64()?;
    let string = v
        .get("faultString")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    Some(Fault { code, string })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What supervisord 4.2 answered to `system.multicall([stopProcess, getAllProcessInfo])`.
    const MULTI: &str = r#"<?xml version='1.0'?>
<methodResponse>
<params>
<param>
<value><array><data>
<value><struct>
<member>
<name>faultCode</name>
<value><int>70</int></value>
</member>
<member>
<name>faultString</name>
<value><string>NOT_RUNNING: web</string></value>
</member>
</struct></value>
<value><array><data>
<value><array><data>
<value><struct>
<member>
<name>description</name>
<value><string>pid 12, uptime 0:01:02 &amp; more</string></value>
</member>
<member>
<name>pid</name>
<value><int>12</int></value>
</member>
<member>
<name>statename</name>
<value><string>RUNNING</string></value>
</member>
<member>
<name>ok</name>
<value><boolean>1</boolean></value>
</member>
<member>
<name>plain</name>
<value>no type</value>
</member>
</struct></value>
</data></array></value>
</data></array></value>
</data></array></value>
</param>
</params>
</methodResponse>
"#;

    #[test]
    fn reads_a_multicall_response() {
        let v = parse_response(MULTI).unwrap().unwrap();
        let items = v.as_array().unwrap();
        assert_eq!(
            fault_of(&items[0]),
            Some(Fault {
                code: 70,
                string: "NOT_RUNNING: web".into()
            })
        );
        let info = &items[1].as_array().unwrap()[0].as_array().unwrap()[0];
        assert_eq!(
            info.get("description").and_then(Value::as_str),
            Some("pid 12, uptime 0:01:02 & more")
        );
        assert_eq!(info.get("pid").and_then(Value::as_i64), Some(12));
        assert_eq!(info.get("ok"), Some(&Value::Bool(true)));
        assert_eq!(info.get("plain").and_then(Value::as_str), Some("no type"));
    }

    #[test]
    fn reads_a_fault_and_refuses_what_is_not_xml_rpc() {
        let f = "<?xml version='1.0'?><methodResponse><fault><value><struct><member><name>faultCode</name><value><int>1</int></value></member>\
                 <member><name>faultString</name><value><string>UNKNOWN_METHOD</string></value></member></struct></value></fault></methodResponse>";
        assert_eq!(
            parse_response(f).unwrap().unwrap_err().string,
            "UNKNOWN_METHOD"
        );
        assert!(
            parse_response("Unauthorized")
                .unwrap_err()
                .contains("not an XML-RPC response")
        );
        assert!(parse_response("<methodResponse><params>").is_err());
        assert!(parse_response("").is_err());
    }

    #[test]
    fn encodes_a_call() {
        let body = call("supervisor.startProcess", &["a<b".into(), true.into()]).unwrap();
        assert!(
            body.contains("<methodName>supervisor.startProcess</methodName>"),
            "{body}"
        );
        assert!(
            body.contains("<param><value><string>a&lt;b</string></value></param><param><value><boolean>1</boolean></value></param>"),
            "{body}"
        );
    }

    #[test]
    fn carriage_returns_are_encoded_and_other_controls_refused() {
        let body = call("supervisor.startProcess", &["a\r\nb\tc".into()]).unwrap();
        assert!(body.contains("<string>a&#13;\nb\tc</string>"), "{body}");
        let mut resp = String::from("<methodResponse><params><param>");
        Value::from("x\ry\r\n").encode_into(&mut resp).unwrap();
        resp.push_str("</param></params></methodResponse>");
        assert_eq!(
            parse_response(&resp).unwrap().unwrap(),
            Value::from("x\ry\r\n")
        );
        for bad in [
            "web\u{0}",
            "a\u{1b}[31m",
            "bell\u{7}",
            "del\u{7f}",
            "c1\u{85}",
        ] {
            let e = call("supervisor.startProcess", &[bad.into()]).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Config, "{e}");
            assert!(
                e.to_string().contains(&bad.escape_debug().to_string()),
                "the value is named: {e}"
            );
        }
        let e = call("bad\u{8}name", &[]).unwrap_err();
        assert!(e.to_string().contains("U+0008"), "{e}");
        let mut out = String::new();
        assert!(
            Value::structure([("k\u{1}", Value::Nil)])
                .encode_into(&mut out)
                .is_err()
        );
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<i64>().prop_map(Value::Int),
            any::<bool>().prop_map(Value::Bool),
            "[a-zA-Z0-9 <>&'\"_:.,-]{0,20}".prop_map(Value::Str),
            Just(Value::Nil),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4).prop_map(Value::Struct),
            ]
        })
    }

    proptest! {
        /// What we encode, we read back (as the parameter of a response).
        #[test]
        fn values_round_trip(v in arb_value()) {
            let mut body = String::from("<?xml version='1.0'?><methodResponse><params><param>");
            v.encode_into(&mut body).unwrap();
            body.push_str("</param></params></methodResponse>");
            prop_assert_eq!(parse_response(&body).unwrap().unwrap(), v);
        }

        /// Any string XML can carry comes back as it was sent, carriage returns included; any
        /// other is refused with an error naming the character.
        #[test]
        fn strings_round_trip_or_are_refused(s in "(\\PC|[\\x00-\\x1f\\x7f-\\x9f\\r\\n\\t]){0,24}") {
            let v = Value::Str(s.clone());
            let mut body = String::from("<?xml version='1.0'?><methodResponse><params><param>");
            let carriable = s.chars().all(|c| !c.is_control() || matches!(c, '\t' | '\n' | '\r'));
            match v.encode_into(&mut body) {
                Ok(()) => {
                    prop_assert!(carriable, "{s:?} was accepted");
                    body.push_str("</param></params></methodResponse>");
                    prop_assert_eq!(parse_response(&body).unwrap().unwrap(), v);
                }
                Err(e) => {
                    prop_assert!(!carriable, "{s:?}: {e}");
                    prop_assert!(e.to_string().contains("control character U+"), "{e}");
                }
            }
        }
    }
}
