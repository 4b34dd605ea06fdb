//! commcare-cloud's CSV inventory (`src/commcare_cloud/ansible/plugins/inventory/csv.py`).
//!
//! The file is split into blocks by blank lines (or lines starting with `,`); lines starting with
//! `#` are skipped. Each block is a CSV table whose first row is its header:
//!
//! - a **host table** has a `hostname` column: each row is one host named by its `host_address`,
//!   put in a group named after `hostname`; every non-empty cell of a column whose header starts
//!   with `group` (`group 1`, `group 2`...) names a group that gets the `hostname` group as a child;
//!   columns `[T.]var: name` are host variables, where the optional type `T` is `S` (string, the
//!   default), `I` (int), `F` (float), `B` (bool: `true`/`t`), `L` (JSON) or `H` (a `hostname` of the
//!   same table, replaced by its `host_address`). The `hostname` cell also becomes the `hostname`
//!   variable, or `alt_hostname` when a `var: hostname` column sets `hostname`.
//! - a **group table** has a `group` column: either one variable per row (`group,var,val,type`)
//!   or one group per row with `[T.]var: name` columns.
//!
//! Cells are stripped of white space where the plugin strips them (values and group names).
//! Deviation: a row shorter than its header is read as if padded with empty cells (the plugin
//! crashes on it).

use super::InventoryBuilder;
use super::address::{py_int, py_splitlines, py_strip};
use crate::{Error, Result, Value};
use indexmap::IndexMap;
use regex::Regex;
use std::collections::HashMap;
use std::path::Path;
use std::sync::LazyLock;

static VAR_SPLIT: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"var:\s*").expect("valid regex"));

/// One CSV record with the 1-based line it starts on.
struct Record {
    line: usize,
    cells: Vec<String>,
}

/// A row as a dict keyed by header (first position of a duplicated header, last cell's value).
type Row = IndexMap<String, String>;

/// Parses CSV `text` into `b`.
pub(super) fn parse(b: &mut InventoryBuilder, text: &str, path: &Path) -> Result<()> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut blocks: Vec<Vec<(usize, &str)>> = Vec::new();
    let mut current: Vec<(usize, &str)> = Vec::new();
    for (idx, line) in py_splitlines(text).into_iter().enumerate() {
        if line.starts_with('#') {
            continue;
        }
        if py_strip(line).is_empty() || line.starts_with(',') {
            if !current.is_empty() {
                blocks.push(std::mem::take(&mut current));
            }
        } else {
            current.push((idx + 1, line));
        }
    }
    if !current.is_empty() {
        blocks.push(current);
    }

    for block in blocks {
        let records = read_records(&block);
        let Some((header, rows)) = records.split_first() else {
            continue;
        };
        if rows.is_empty() {
            return Err(Error::at(
                path,
                Some(header.line),
                None,
                "a table header with no rows under it",
            )
            .with_hint(
                "separate tables with one blank line and put at least one row under each header",
            ));
        }
        let mut keys: IndexMap<String, usize> = IndexMap::new();
        for (i, name) in header.cells.iter().enumerate() {
            keys.insert(name.clone(), i);
        }
        let mut dict_rows: Vec<(usize, Row)> = Vec::with_capacity(rows.len());
        for r in rows {
            if r.cells.len() > header.cells.len() {
                return Err(Error::at(
                    path,
                    Some(r.line),
                    None,
                    format!(
                        "row has {} cells but the header on line {} has {}",
                        r.cells.len(),
                        header.line,
                        header.cells.len()
                    ),
                ));
            }
            let row: Row = keys
                .iter()
                .map(|(k, &i)| (k.clone(), r.cells.get(i).cloned().unwrap_or_default()))
                .collect();
            dict_rows.push((r.line, row));
        }
        if keys.contains_key("hostname") {
            parse_hosts(b, &dict_rows, path)?;
        } else if keys.contains_key("group") {
            parse_groups(b, &dict_rows, &keys, path)?;
        }
    }
    Ok(())
}

fn parse_hosts(b: &mut InventoryBuilder, rows: &[(usize, Row)], path: &Path) -> Result<()> {
    let err = |line: usize, msg: String| Error::at(path, Some(line), None, msg);
    let mut aliases: HashMap<String, String> = HashMap::new();
    for (line, row) in rows {
        let address = row
            .get("host_address")
            .ok_or_else(|| err(*line, "missing column `host_address`".into()))?;
        aliases.insert(row["hostname"].clone(), address.clone());
    }
    for (line, row) in rows {
        let line = *line;
        let groups: Vec<String> = row
            .iter()
            .filter(|(k, v)| k.starts_with("group") && !py_strip(v).is_empty())
            .map(|(_, v)| py_strip(v).to_string())
            .collect();
        let vars = host_vars(row, &aliases).map_err(|m| err(line, m))?;
        let host = &row["host_address"];
        let host_group = &row["hostname"];
        if host_group.is_empty() {
            return Err(err(line, "empty `hostname` cell".into()));
        }
        b.group_idx_or_create(host_group);
        b.add_host_inner(host, Some(host_group), None)
            .map_err(|m| err(line, m))?;
        for g in &groups {
            b.group_idx_or_create(g);
            b.add_child_inner(g, host_group).map_err(|m| err(line, m))?;
        }
        for (k, v) in vars {
            b.set_variable_inner(host, &k, v)
                .map_err(|m| err(line, m))?;
        }
    }
    Ok(())
}

/// Splits a `[T.]var: name` header into its type letter and variable name.
fn var_column(key: &str, name_rule: NameRule) -> std::result::Result<(String, String), String> {
    let (item_type, name) = if key.contains('.') {
        let parts: Vec<&str> = key.split('.').collect();
        if parts.len() != 2 {
            return Err(format!(
                "cannot parse column header `{key}`: expected `TYPE.var: name`"
            ));
        }
        (parts[0].to_string(), parts[1].to_string())
    } else {
        ("S".to_string(), key.to_string())
    };
    let name = match name_rule {
        NameRule::RegexSplit => {
            let parts: Vec<&str> = VAR_SPLIT.split(&name).collect();
            if parts.len() != 2 {
                return Err(format!("unable to parse variable name `{name}`"));
            }
            parts[1].to_string()
        }
        NameRule::SpaceSplit => name.split(' ').nth(1).map(str::to_string).ok_or_else(|| {
            format!("unable to parse variable name `{name}`: expected `var: name`")
        })?,
    };
    Ok((item_type, name))
}

/// How the plugin extracts a variable name from a column header: host tables split on
/// `var:\s*`, group tables on the first space.
#[derive(Clone, Copy)]
enum NameRule {
    RegexSplit,
    SpaceSplit,
}

fn host_vars(
    row: &Row,
    aliases: &HashMap<String, String>,
) -> std::result::Result<Vec<(String, Value)>, String> {
    let mut vars: IndexMap<String, Value> = IndexMap::new();
    for (key, raw) in row {
        let raw = py_strip(raw);
        if key.contains("var") && !raw.is_empty() {
            let (item_type, name) = var_column(key, NameRule::RegexSplit)?;
            let value = convert(&item_type, raw, Some(aliases))?;
            vars.insert(name, value);
        }
    }
    let hostname = Value::String(row["hostname"].clone());
    if vars.contains_key("hostname") {
        vars.insert("alt_hostname".to_string(), hostname);
    } else {
        vars.insert("hostname".to_string(), hostname);
    }
    Ok(vars.into_iter().collect())
}

fn parse_groups(
    b: &mut InventoryBuilder,
    rows: &[(usize, Row)],
    keys: &IndexMap<String, usize>,
    path: &Path,
) -> Result<()> {
    let err = |line: usize, msg: String| Error::at(path, Some(line), None, msg);
    let row_format = keys.contains_key("var") && keys.contains_key("val");
    for (line, row) in rows {
        let line = *line;
        let group = &row["group"];
        if group.is_empty() {
            return Err(err(line, "empty `group` cell".into()));
        }
        b.group_idx_or_create(group);
        if row_format {
            let item_type = row.get("type").ok_or_else(|| {
                err(line, "missing column `type`".into())
                    .with_hint("a group variable table has the columns `group,var,val,type`")
            })?;
            let raw = py_strip(&row["val"]);
            let value = convert(item_type, raw, None).map_err(|m| err(line, m))?;
            b.set_group_var_inner(group, &row["var"], value)
                .map_err(|m| err(line, m))?;
        } else {
            for (key, raw) in row.iter().filter(|(k, _)| k.as_str() != "group") {
                let raw = py_strip(raw);
                if key.contains("var") && !raw.is_empty() {
                    let (item_type, name) =
                        var_column(key, NameRule::SpaceSplit).map_err(|m| err(line, m))?;
                    let value = convert(&item_type, raw, None).map_err(|m| err(line, m))?;
                    b.set_group_var_inner(group, &name, value)
                        .map_err(|m| err(line, m))?;
                }
            }
        }
    }
    Ok(())
}

/// `conv_str2value`.
fn convert(
    item_type: &str,
    item: &str,
    aliases: Option<&HashMap<String, String>>,
) -> std::result::Result<Value, String> {
    if item.is_empty() {
        return Ok(Value::Null);
    }
    Ok(match item_type {
        "I" => {
            let v = py_int(item).ok_or_else(|| format!("invalid integer `{item}`"))?;
            match i64::try_from(v) {
                Ok(v) => Value::Number(v.into()),
                Err(_) => Value::String(v.to_string()),
            }
        }
        "B" => {
            let lower = item.to_lowercase();
            Value::Bool(lower == "true" || lower == "t")
        }
        "F" => Value::Number(
            py_float(item)
                .ok_or_else(|| format!("invalid float `{item}`"))?
                .into(),
        ),
        "L" => {
            let json: serde_json::Value =
                serde_json::from_str(item).map_err(|e| format!("invalid JSON `{item}`: {e}"))?;
            json_to_value(json)
        }
        "H" => match aliases {
            Some(a) => Value::String(a.get(item).cloned().unwrap_or_else(|| item.to_string())),
            None => {
                return Err(format!(
                    "a variable of type host is not supported here: `{item}`"
                ));
            }
        },
        _ => Value::String(item.to_string()),
    })
}

/// Python's `float(s)`.
fn py_float(s: &str) -> Option<f64> {
    let t = py_strip(s);
    if t.contains("__") || t.starts_with('_') || t.ends_with('_') {
        return None;
    }
    let chars: Vec<char> = t.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if c == '_'
            && !(i > 0
                && chars[i - 1].is_ascii_digit()
                && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            return None;
        }
    }
    t.replace('_', "").parse().ok()
}

fn json_to_value(j: serde_json::Value) -> Value {
    match j {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Number(i.into())
            } else if let Some(u) = n.as_u64() {
                Value::Number(u.into())
            } else {
                Value::Number(n.as_f64().unwrap_or(f64::NAN).into())
            }
        }
        serde_json::Value::String(s) => Value::String(s),
        serde_json::Value::Array(a) => Value::Sequence(a.into_iter().map(json_to_value).collect()),
        serde_json::Value::Object(o) => {
            let mut m = yaml_serde::Mapping::new();
            for (k, v) in o {
                m.insert(Value::String(k), json_to_value(v));
            }
            Value::Mapping(m)
        }
    }
}

/// Python's `csv.reader` (excel dialect) over the lines of one block. As with the plugin, lines
/// come from `splitlines()`, so a quoted cell that spans lines is joined without a newline.
fn read_records(lines: &[(usize, &str)]) -> Vec<Record> {
    #[derive(PartialEq, Clone, Copy)]
    enum St {
        StartField,
        InField,
        InQuoted,
        QuoteInQuoted,
    }
    let mut records = Vec::new();
    let mut cells: Vec<String> = Vec::new();
    let mut field = String::new();
    let mut state = St::StartField;
    let mut start_line = 0;
    let mut in_record = false;
    for &(lineno, line) in lines {
        if !in_record {
            start_line = lineno;
            in_record = true;
        }
        for c in line.chars() {
            match state {
                St::StartField => match c {
                    '"' => state = St::InQuoted,
                    ',' => cells.push(std::mem::take(&mut field)),
                    _ => {
                        field.push(c);
                        state = St::InField;
                    }
                },
                St::InField => match c {
                    ',' => {
                        cells.push(std::mem::take(&mut field));
                        state = St::StartField;
                    }
                    _ => field.push(c),
                },
                St::InQuoted => match c {
                    '"' => state = St::QuoteInQuoted,
                    _ => field.push(c),
                },
                St::QuoteInQuoted => match c {
                    '"' => {
                        field.push('"');
                        state = St::InQuoted;
                    }
                    ',' => {
                        cells.push(std::mem::take(&mut field));
                        state = St::StartField;
                    }
                    _ => {
                        field.push(c);
                        state = St::InField;
                    }
                },
            }
        }
        // End of line.
        if state == St::InQuoted {
            continue;
        }
        cells.push(std::mem::take(&mut field));
        records.push(Record {
            line: start_line,
            cells: std::mem::take(&mut cells),
        });
        state = St::StartField;
        in_record = false;
    }
    if in_record {
        cells.push(std::mem::take(&mut field));
        records.push(Record {
            line: start_line,
            cells,
        });
    }
    records
}

#[cfg(test)]
mod tests {
    use super::super::Inventory;
    use super::*;
    use proptest::prelude::*;
    use yaml_serde::Number;

    /// commcare-cloud's `tests/csv_env/single_file/inventory.csv`, unchanged.
    const SINGLE_FILE: &str = r#"# couchdb2,,,,,,,,,,,,
hostname,host_address,group 1,group 2,group 3,,,,,,,
couch1,192.168.33.22,couchdb2,lvm,,,,,,,,
,,,,,,,,,,,,
# postgres,,,,,,,,,,,,
hostname,var: hostname,host_address,group 1,group 2,group 3,L.var: devices,L.var: partitions,var: datavol_device,H.var: hot_standby_server,H.var: hot_standby_master,L.var: postgresql_replication_slots,var: replication_slot
pgucr,ALIAS_PU00,192.168.33.26,postgres,lvm,test_group1,"[""/dev/sdb""]","[""/dev/sdb1"",""/dev/sdc""]",/dev/mapper/consolidated-data,pgucrstandby0,,"[""standby"",""spare""]",
pgucrstandby0,ALIAS_PUS0,192.168.33.27,pg_standby,lvm,test_group2,"[""/dev/sda""]","[""/dev/sdb1"",""/dev/sdc1""]",/dev/mapper/consolidated-data,,pgucr,,standby
,,,,,,,,,,,,
# postgres group vars,,,,,,,,,,,,
group,var,val,type,,,,,,,,,
test_group1,integer_var,3500,I,,,,,,,,,
test_group1,float_var,0.9,F,,,,,,,,,
test_group1,list_var,"[1, 2]",L,,,,,,,,,
test_group2,string_var,test,S,,,,,,,,,
test_group2,boolean_var1,TRUE,B,,,,,,,,,
test_group2,boolean_var2,FALSE,B,,,,,,,,,
postgres,var1,val1,S,,,,,,,,,

# couchdb2 cont,,,,,,,,,,,,
hostname,host_address,group 1,group 2
couch0,192.168.33.21,couchdb2,lvm

# more group vars
group,var,val,type
test_group1,integer_var1,10,I
"#;

    fn s(v: &str) -> Value {
        Value::String(v.to_string())
    }

    fn parse(text: &str) -> Result<Inventory> {
        Inventory::parse_csv(text, Path::new("inventory.csv"))
    }

    #[test]
    fn commcare_cloud_single_file() {
        let inv = parse(SINGLE_FILE).unwrap();
        let v = inv.host_vars("192.168.33.26");
        assert_eq!(v["hostname"], s("ALIAS_PU00"));
        assert_eq!(v["alt_hostname"], s("pgucr"));
        assert_eq!(v["hot_standby_server"], s("192.168.33.27"));
        assert_eq!(v["devices"], Value::Sequence(vec![s("/dev/sdb")]));
        assert_eq!(
            v["partitions"],
            Value::Sequence(vec![s("/dev/sdb1"), s("/dev/sdc")])
        );
        assert_eq!(
            v["postgresql_replication_slots"],
            Value::Sequence(vec![s("standby"), s("spare")])
        );
        assert_eq!(v["datavol_device"], s("/dev/mapper/consolidated-data"));
        assert_eq!(v["integer_var"], Value::Number(3500.into()));
        assert_eq!(v["integer_var1"], Value::Number(10.into()));
        assert_eq!(v["float_var"], Value::Number(Number::from(0.9)));
        assert_eq!(
            v["list_var"],
            Value::Sequence(vec![Value::Number(1.into()), Value::Number(2.into())])
        );
        assert_eq!(v["var1"], s("val1"));
        assert!(!v.contains_key("replication_slot"));

        let v = inv.host_vars("192.168.33.27");
        assert_eq!(v["hot_standby_master"], s("192.168.33.26"));
        assert_eq!(v["replication_slot"], s("standby"));
        assert_eq!(v["boolean_var1"], Value::Bool(true));
        assert_eq!(v["boolean_var2"], Value::Bool(false));
        assert_eq!(v["string_var"], s("test"));

        assert_eq!(inv.host_vars("192.168.33.21")["hostname"], s("couch0"));
        assert_eq!(inv.host_vars("192.168.33.22")["hostname"], s("couch1"));

        // Expected groups from commcare-cloud's tests/test_csv_inventory.py.
        assert_eq!(
            inv.group("couchdb2").unwrap().children,
            ["couch1", "couch0"]
        );
        assert_eq!(
            inv.group("lvm").unwrap().children,
            ["couch1", "pgucr", "pgucrstandby0", "couch0"]
        );
        assert_eq!(inv.group("test_group1").unwrap().children, ["pgucr"]);
        assert_eq!(inv.group("pgucr").unwrap().hosts, ["192.168.33.26"]);
        assert_eq!(inv.group_hosts("pg_standby").unwrap(), ["192.168.33.27"]);
        assert_eq!(inv.group_hosts("test_group2").unwrap(), ["192.168.33.27"]);
        assert!(inv.group_hosts("ungrouped").unwrap().is_empty());
        let mut all = inv.group_hosts("all").unwrap();
        all.sort_unstable();
        assert_eq!(
            all,
            [
                "192.168.33.21",
                "192.168.33.22",
                "192.168.33.26",
                "192.168.33.27"
            ]
        );
        assert_eq!(
            inv.resolve(&crate::inventory::ServerSpec::parse("pgucr").unwrap())
                .unwrap(),
            "192.168.33.26"
        );
    }

    #[test]
    fn column_format_group_vars() {
        let inv = parse("hostname,host_address,group 1\nh1,10.0.0.1,web\n\ngroup,var: port,I.var: n,B.var: on\nweb,9010,3,t\n").unwrap();
        let v = inv.host_vars("10.0.0.1");
        assert_eq!(v["port"], s("9010"));
        assert_eq!(v["n"], Value::Number(3.into()));
        assert_eq!(v["on"], Value::Bool(true));
    }

    #[test]
    fn csv_quoting_like_python() {
        let recs = read_records(&[(1, r#"a,"b,c","d""e",x"y,"""#), (2, "z")]);
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].cells, ["a", "b,c", "d\"e", "x\"y", ""]);
        assert_eq!(recs[1].line, 2);
        // A quoted cell running over the end of a line continues on the next one.
        let recs = read_records(&[(1, r#"a,"b"#), (2, r#"c",d"#)]);
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].cells, ["a", "bc", "d"]);
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = parse("hostname,host_address,I.var: n\nh,1.2.3.4,x\n").unwrap_err();
        assert_eq!(e.message(), "inventory.csv:2: invalid integer `x`");
        let e = parse("hostname,host_address\nh,1.2.3.4,extra\n").unwrap_err();
        assert!(
            e.message().starts_with("inventory.csv:2: row has 3 cells"),
            "{}",
            e.message()
        );
        let e = parse("group,var,val\ng,x,1\n").unwrap_err();
        assert!(
            e.message()
                .starts_with("inventory.csv:2: missing column `type`"),
            "{}",
            e.message()
        );
        let e = parse("hostname,host_address,L.var: x\nh,1.2.3.4,[1\n").unwrap_err();
        assert!(
            e.message().starts_with("inventory.csv:2: invalid JSON"),
            "{}",
            e.message()
        );
        let e = parse("hostname,host_address\n").unwrap_err();
        assert!(
            e.message()
                .starts_with("inventory.csv:1: a table header with no rows"),
            "{}",
            e.message()
        );
        let e = parse("hostname,host_address\nh,\n").unwrap_err();
        assert!(e.message().contains("empty host name"), "{}", e.message());
        let e = parse("group,var,val,type\ng,x,1,H\n").unwrap_err();
        assert!(e.message().contains("type host"), "{}", e.message());
        let e = parse("hostname,host_address,a.b.var: x\nh,1.2.3.4,1\n").unwrap_err();
        assert!(e.message().contains("a.b.var: x"), "{}", e.message());
    }

    #[test]
    fn blocks_comments_and_ignored_tables() {
        let inv = parse("# comment\nfoo,bar\n1,2\n\nhostname,host_address\nh,1.2.3.4\n").unwrap();
        assert_eq!(inv.len(), 1);
        assert_eq!(inv.group_hosts("h").unwrap(), ["1.2.3.4"]);
        assert_eq!(py_float(" 1_0.5 "), Some(10.5));
        assert_eq!(py_float("inf"), Some(f64::INFINITY));
        assert_eq!(py_float("1__0"), None);
    }

    proptest! {
        #[test]
        fn never_panics(text in any::<String>()) {
            let _ = parse(&text);
        }

        #[test]
        fn never_panics_on_csv_like_text(lines in proptest::collection::vec(
            "(hostname|host_address|group 1|group|var|val|type|var: x|I.var: y|L.var: z|H.var: h|h1|10.0.0.1|g|\"|,|1|\\[1\\]|#| ){0,8}", 0..8)) {
            let _ = parse(&lines.join("\n"));
        }
    }
}
