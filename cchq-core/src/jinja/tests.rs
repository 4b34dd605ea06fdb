use super::*;
use proptest::prelude::*;
use serde_json::json;

/// `template` rendered against `vars`.
fn r(template: &str, vars: J) -> J {
    render_str(template, &vars).unwrap_or_else(|e| panic!("{template}: {e}"))
}

/// The error of rendering `template` against `vars`.
fn err(template: &str, vars: J) -> Error {
    match render_str(template, &vars) {
        Ok(v) => panic!("{template}: rendered {v}"),
        Err(e) => e,
    }
}

/// A scope of variables set in files: `(file, yaml)`, later files over earlier ones.
fn scope(files: &[(&str, &str)]) -> Arc<Scope> {
    let mut layer = Layer::default();
    for (file, text) in files {
        let v: J = yaml_serde::from_str(text).unwrap();
        for (k, x) in v.as_object().unwrap() {
            layer.insert(k.clone(), x.clone(), file);
        }
    }
    Scope::of(layer)
}

#[test]
fn the_reported_examples_keep_the_text_outside_the_braces() {
    let vars = json!({"deploy_env": "test"});
    assert_eq!(
        r("{{ deploy_env }} via 10.0.0.1", vars.clone()),
        json!("test via 10.0.0.1")
    );
    assert_eq!(
        r("https://{{ deploy_env }}.example/api/v1.2/", vars.clone()),
        json!("https://test.example/api/v1.2/")
    );
    assert_eq!(r("/api/v1.2/", vars), json!("/api/v1.2/"));
}

#[test]
fn indexes_and_groups() {
    let vars = json!({"groups": {"proxy": ["p1", "p2"], "couchdb2_alb": ["alb"]}, "l": [[1, 2]]});
    assert_eq!(r("{{ groups.proxy.0 }}", vars.clone()), json!("p1"));
    assert_eq!(r("{{ groups.proxy[1] }}", vars.clone()), json!("p2"));
    assert_eq!(
        r("{{ groups['couchdb2_alb'][0] }}:5984", vars.clone()),
        json!("alb:5984")
    );
    assert_eq!(
        r("{{ groups[\"proxy\"] | length }}", vars.clone()),
        json!(2)
    );
    assert_eq!(r("{{ l.0.1 }}", vars.clone()), json!(2));
    assert_eq!(r("{{ 'p1' in groups.proxy }}", vars), json!(true));
}

#[test]
fn one_expression_keeps_its_type_and_text_around_it_makes_a_string() {
    let vars = json!({"l": ["a", "b"], "m": {"k": 1}, "n": 5, "t": true, "z": null, "s": "12"});
    assert_eq!(r("{{ l }}", vars.clone()), json!(["a", "b"]));
    assert_eq!(r("{{ m }}", vars.clone()), json!({"k": 1}));
    assert_eq!(r("{{ n }}", vars.clone()), json!(5));
    assert_eq!(r("{{ n * 2 }}", vars.clone()), json!(10));
    assert_eq!(r("{{ t }}", vars.clone()), json!(true));
    assert_eq!(r("{{ z }}", vars.clone()), J::Null);
    assert_eq!(r("{{ s }}", vars.clone()), json!("12"));
    assert_eq!(r("{{ {'a': n} }}", vars.clone()), json!({"a": 5}));
    // Around text, values print as Python prints them (as in Ansible).
    assert_eq!(r("x{{ l }}", vars.clone()), json!("x['a', 'b']"));
    assert_eq!(
        r("{{ t }}/{{ z }}/{{ n }}", vars.clone()),
        json!("True/None/5")
    );
    // Two expressions are a string.
    assert_eq!(r("{{ n }}{{ n }}", vars.clone()), json!("55"));
    assert_eq!(r("{{ '}}{{' }}", vars), json!("}}{{"));
}

#[test]
fn statements_and_comments() {
    let vars = json!({"l": ["a", "b"]});
    assert_eq!(
        r("{% for x in l %}{{ x }},{% endfor %}", vars.clone()),
        json!("a,b,")
    );
    assert_eq!(r("a{# note #}b", vars.clone()), json!("ab"));
    assert_eq!(
        r("{% if l %}yes{% else %}no{% endif %}\n", vars),
        json!("yes\n")
    );
}

#[test]
fn default_and_d() {
    let vars = json!({"set": "x", "empty": ""});
    assert_eq!(r("{{ nope | default('y') }}", vars.clone()), json!("y"));
    assert_eq!(r("{{ nope | d('y') }}", vars.clone()), json!("y"));
    assert_eq!(r("{{ set | default('y') }}", vars.clone()), json!("x"));
    assert_eq!(
        r("{{ empty | default('y', true) }}", vars.clone()),
        json!("y")
    );
    assert_eq!(r("{{ nope | default(None) }}", vars.clone()), J::Null);
    assert_eq!(r("{{ nope is defined }}", vars), json!(false));
}

#[test]
fn list_filters() {
    let vars = json!({"l": ["b", "a", "b"], "n": [[1, [2]], null, 3], "hosts": [{"name": "h1", "port": "22"}, {"name": "h2", "port": "2222"}]});
    assert_eq!(r("{{ l | join(',') }}", vars.clone()), json!("b,a,b"));
    assert_eq!(
        r("{{ l | unique | list }}", vars.clone()),
        json!(["b", "a"])
    );
    assert_eq!(r("{{ l | sort }}", vars.clone()), json!(["a", "b", "b"]));
    assert_eq!(
        r("{{ l | first }}-{{ l | last }}", vars.clone()),
        json!("b-b")
    );
    assert_eq!(r("{{ l | length }}", vars.clone()), json!(3));
    assert_eq!(r("{{ n | flatten }}", vars.clone()), json!([1, 2, 3]));
    assert_eq!(
        r("{{ n | flatten(levels=1) }}", vars.clone()),
        json!([1, [2], 3])
    );
    assert_eq!(r("{{ n | flatten(1) }}", vars.clone()), json!([1, [2], 3]));
    assert_eq!(
        r("{{ hosts | map(attribute='name') | list }}", vars.clone()),
        json!(["h1", "h2"])
    );
    assert_eq!(
        r(
            "{{ hosts | map(attribute='port') | map('int') | list }}",
            vars.clone()
        ),
        json!([22, 2222])
    );
    assert_eq!(r("{{ l | map('upper') | join }}", vars), json!("BAB"));
}

#[test]
fn scalar_filters() {
    let vars = json!({"s": "Hello", "n": "42", "y": "yes"});
    assert_eq!(r("{{ n | int + 1 }}", vars.clone()), json!(43));
    assert_eq!(r("{{ y | bool }}", vars.clone()), json!(true));
    for (v, b) in [
        ("'on'", true),
        ("'1'", true),
        ("1", true),
        ("'TRUE'", true),
        ("'no'", false),
        ("2", false),
        ("none", false),
        ("true", true),
    ] {
        assert_eq!(
            r(&format!("{{{{ {v} | bool }}}}"), json!({})),
            json!(b),
            "{v}"
        );
    }
    assert_eq!(
        r("{{ s | lower }}{{ s | upper }}", vars.clone()),
        json!("helloHELLO")
    );
    assert_eq!(
        r("{{ s | replace('l', 'L') }}", vars.clone()),
        json!("HeLLo")
    );
    assert_eq!(
        r("{{ s | regex_replace('l+', '_') }}", vars.clone()),
        json!("He_o")
    );
    assert_eq!(
        r(
            "{{ 'db1.example.com' | regex_replace('^([a-z]+)(\\\\d)\\\\..*$', '\\\\2-\\\\1') }}",
            vars.clone()
        ),
        json!("1-db")
    );
    assert_eq!(
        r(
            "{{ 'ab' | regex_replace('(?P<x>a)', '\\\\g<x>$') }}",
            vars.clone()
        ),
        json!("a$b")
    );
    assert_eq!(r("{{ s | regex_search('l+') }}", vars.clone()), json!("ll"));
    assert_eq!(
        r("{{ '_' ~ s if s != 'production' else '' }}", vars.clone()),
        json!("_Hello")
    );
    assert_eq!(r("{{ True | ternary('a', 'b') }}", vars), json!("a"));
}

#[test]
fn json_and_dict_filters() {
    let vars =
        json!({"m": {"b": [1, "é"], "a": {"x": 1, "y": 2}}, "o": {"a": {"y": 3}, "c": true}});
    assert_eq!(
        r("{{ m | to_json }}", vars.clone()),
        json!(r#"{"a": {"x": 1, "y": 2}, "b": [1, "\u00e9"]}"#)
    );
    assert_eq!(
        r("{{ [1] | to_nice_json }}", vars.clone()),
        json!("[\n    1\n]")
    );
    assert_eq!(
        r("{{ {'k': []} | to_nice_json(indent=2) }}", vars.clone()),
        json!("{\n  \"k\": []\n}")
    );
    assert_eq!(
        r("{{ m | combine(o) }}", vars.clone()),
        json!({"a": {"y": 3}, "b": [1, "é"], "c": true})
    );
    assert_eq!(
        r("{{ m | combine(o, recursive=True) }}", vars.clone()),
        json!({"a": {"x": 1, "y": 3}, "b": [1, "é"], "c": true})
    );
    assert_eq!(
        r("{{ m.get('zz', 'none') }}/{{ m.get('a').x }}", vars.clone()),
        json!("none/1")
    );
    assert_eq!(r("{{ o.keys() | list }}", vars.clone()), json!(["a", "c"]));
    assert_eq!(r("{{ 'a.b'.split('.') }}", vars), json!(["a", "b"]));
}

#[test]
fn variables_resolve_lazily_through_other_variables() {
    let s = scope(&[(
        "public.yml",
        "www: '/home/{{ user }}/www'\nuser: cchq\nhome: '{{ www }}/{{ env }}'\nenv: test\nlist: ['{{ env }}', '{{ user }}']\nn: '{{ 3 }}'\n",
    )]);
    assert_eq!(
        s.resolve("home").result.unwrap(),
        json!("/home/cchq/www/test")
    );
    assert_eq!(
        s.resolve("home").reads,
        ["env", "home", "user", "www"].map(String::from).into()
    );
    assert_eq!(s.resolve("list").result.unwrap(), json!(["test", "cchq"]));
    assert_eq!(s.resolve("n").result.unwrap(), json!(3));
    // A list value read whole keeps its type.
    let s = scope(&[(
        "public.yml",
        "hosts: ['{{ a }}', b]\na: x\nall: '{{ hosts }}'\njoined: '{{ hosts | join(\" \") }}'\n",
    )]);
    assert_eq!(s.resolve("all").result.unwrap(), json!(["x", "b"]));
    assert_eq!(s.resolve("joined").result.unwrap(), json!("x b"));
}

#[test]
fn a_cycle_is_an_error_naming_it_and_the_files() {
    let s = scope(&[
        ("public.yml", "a: '{{ b }}'\nc: 'x{{ a }}'\n"),
        ("proxy.yml", "b: '{{ a | default(1) }}'\n"),
    ]);
    for key in ["a", "b", "c"] {
        let e = s.resolve(key).result.unwrap_err();
        assert!(
            e.message().contains("refer to each other in a cycle"),
            "{key}: {e}"
        );
        assert!(
            e.message().contains("(public.yml)") && e.message().contains("`b` (proxy.yml)"),
            "{key}: {e}"
        );
        assert!(e.hint().is_some(), "{e:?}");
    }
    let e = scope(&[("public.yml", "a: '{{ a }}'\n")])
        .resolve("a")
        .result
        .unwrap_err();
    assert!(
        e.message().starts_with(
            "public.yml: `a`: variables refer to each other in a cycle: `a` (public.yml) -> `a`"
        ),
        "{e}"
    );
    // Shown the same way whichever variable is read first.
    let s = scope(&[("public.yml", "z: '{{ y }}'\ny: '{{ z }}'\n")]);
    for key in ["z", "y"] {
        let e = s.resolve(key).result.unwrap_err();
        assert!(
            e.message()
                .ends_with("`y` (public.yml) -> `z` (public.yml) -> `y` (public.yml)"),
            "{e}"
        );
    }
}

#[test]
fn an_undefined_variable_is_an_error_naming_it_and_the_file() {
    let s = scope(&[(
        "public.yml",
        "a: 'x {{ nope }} y'\nb: '{{ a }}'\nc: '{{ l[5] }}'\nl: []\nd: '{{ maybe | default(\"\") }}{{ gone }}'\n",
    )]);
    let e = s.resolve("a").result.unwrap_err();
    assert_eq!(
        e.message(),
        "public.yml: `a`: variable `nope` is not defined",
        "{e}"
    );
    assert!(e.hint().is_some_and(|h| h.contains("`nope`")), "{e:?}");
    let e = s.resolve("b").result.unwrap_err();
    assert_eq!(
        e.message(),
        "public.yml: `b`: variable `nope` is not defined (through `a` -> `nope`; `a` is set in public.yml)",
        "{e}"
    );
    let e = s.resolve("c").result.unwrap_err();
    assert!(
        e.message().starts_with("public.yml: `c`:") && e.message().contains("l[5]"),
        "{e}"
    );
    let e = s.resolve("d").result.unwrap_err();
    assert!(e.message().contains("`gone`"), "{e}");
    let e = s.resolve("not_set").result.unwrap_err();
    assert!(e.message().contains("`not_set` is not defined"), "{e}");
}

#[test]
fn a_bad_expression_is_an_error_naming_the_file_and_variable() {
    let s = scope(&[(
        "vault.yml",
        "a: '{{ 1 + }}'\nb: '{{ x | no_such_filter }}'\nx: 1\n",
    )]);
    let e = s.resolve("a").result.unwrap_err();
    assert!(
        e.message().starts_with("vault.yml: `a`: syntax error"),
        "{e}"
    );
    let e = s.resolve("b").result.unwrap_err();
    assert!(
        e.message().starts_with("vault.yml: `b`:") && e.message().contains("no_such_filter"),
        "{e}"
    );
    let e = err("{{ {'a': 1} | combine([1]) }}", json!({}));
    assert!(e.message().contains("combine"), "{e}");
}

#[test]
fn a_value_read_through_layers_takes_the_top_one() {
    let base = Base::new(scope_layer(
        "public.yml",
        "a: '{{ b }}-{{ c }}'\nb: env\nc: env\n",
    ));
    let host = Scope::new(base.clone(), scope_layer("the inventory", "c: host\n"));
    assert_eq!(host.resolve("a").result.unwrap(), json!("env-host"));
    assert_eq!(
        Scope::new(base, Layer::default())
            .resolve("a")
            .result
            .unwrap(),
        json!("env-env")
    );
}

#[test]
fn hostvars_read_each_hosts_variables_over_the_shared_ones() {
    let hosts: HashMap<String, Layer> = [
        (
            "h1".to_owned(),
            scope_layer(
                "inventory.ini",
                "port: 1\nname: '{{ inventory_hostname }}'\ninventory_hostname: h1\nloop: '{{ hostvars.h2.loop }}'\n",
            ),
        ),
        ("h2".to_owned(), scope_layer("inventory.ini", "loop: '{{ hostvars.h1.loop }}'\ninventory_hostname: h2\n")),
    ]
    .into();
    let base = Base::with_hosts(
        scope_layer(
            "public.yml",
            "a: '{{ hostvars[\"h1\"].port }}-{{ hostvars.h1.name }}-{{ hostvars.h2.port | default(0) }}'\nport: 9\nb: '{{ hostvars.h1.ansible_hostname }}'\nc: '{{ hostvars.h2.loop }}'\n",
        ),
        hosts,
    );
    let s = Scope::new(
        base.clone(),
        scope_layer(
            "inventory.ini",
            "inventory_hostname: h2\nloop: '{{ hostvars.h2.loop }}'\n",
        ),
    );
    assert_eq!(s.resolve("a").result.unwrap(), json!("1-h1-9"));
    let e = s.resolve("b").result.unwrap_err();
    assert!(e.message().contains("hostvars.h1.ansible_hostname"), "{e}");
    // Hosts that refer to each other stop (an error), not overflow the stack.
    assert!(s.resolve("c").result.is_err());
    assert!(
        Scope::new(base, Layer::default())
            .resolve("nothing")
            .result
            .is_err()
    );
}

fn scope_layer(file: &str, text: &str) -> Layer {
    let v: J = yaml_serde::from_str(text).unwrap();
    let mut layer = Layer::default();
    for (k, x) in v.as_object().unwrap() {
        layer.insert(k.clone(), x.clone(), file);
    }
    layer
}

/// Text with no Jinja marker.
fn plain() -> impl Strategy<Value = String> {
    any::<String>().prop_filter("no Jinja marker", |s| !is_template(s))
}

proptest! {
    /// Text without `{{`, `{%` or `{#` is kept byte for byte.
    #[test]
    fn text_without_jinja_is_kept_byte_for_byte(s in plain()) {
        prop_assert_eq!(r(&s, json!({"x": 1})), J::String(s));
    }

    /// One `{{ var }}` in any text: the text around it kept, the value in its place.
    #[test]
    fn one_reference_in_any_text_is_replaced_by_its_value(
        before in plain(),
        after in plain(),
        value in "[ -~]{0,20}",
    ) {
        // No marker but the one `{{ var }}` (a `{` just before it would make one), none in the value.
        prop_assume!(!before.ends_with('{') && !is_template(&value));
        let t = format!("{before}{{{{ var }}}}{after}");
        let got = render_str(&t, &json!({"var": value})).unwrap();
        prop_assert_eq!(got, J::String(format!("{before}{value}{after}")));
    }
}
