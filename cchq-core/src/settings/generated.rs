//! Values commcare-cloud computes from the environment files and hands to its settings templates
//! (`Environment._create_generated_yml`): `CELERY_FLOWER_URL`, `CELERY_HEARTBEAT_THRESHOLDS`,
//! the pillows every host runs, `ES_SETTINGS` (from `elasticsearch.yml`), its constant database
//! names.

use serde_json::{Map, Value as J, json};

use crate::app_processes::{DEPRECATED_PILLOWS, translate_item};
use crate::environment::Environment;

/// commcare-cloud's catalog of CommCare HQ's celery processes (`CELERY_PROCESSES`): the queues
/// (`true`) and other programs (`false`), and how long a queue may go without a heartbeat
/// before it counts as blocked, in seconds (`None`: never).
pub(crate) const CELERY_PROCESSES: &[(&str, bool, Option<u32>)] = &[
    ("analytics_queue", true, Some(30 * 60)),
    ("async_restore_queue", true, Some(60)),
    ("background_queue", true, Some(10 * 60)),
    ("beat", false, None),
    ("case_rule_queue", true, Some(60 * 60)),
    ("case_import_queue", true, Some(60)),
    ("celery", true, Some(60)),
    ("celery_periodic", true, Some(10 * 60)),
    ("dashboard_comparison_queue", true, None),
    ("repeat_record_datasource_queue", true, None),
    ("email_queue", true, Some(30)),
    ("export_download_queue", true, Some(30)),
    ("flower", false, None),
    ("icds_aggregation_queue", true, None),
    ("icds_dashboard_reports_queue", true, None),
    ("linked_domain_queue", true, None),
    ("logistics_background_queue", true, None),
    ("logistics_reminder_queue", true, None),
    ("malt_generation_queue", true, None),
    ("reminder_case_update_queue", true, Some(15 * 60)),
    ("reminder_case_update_bulk_queue", true, Some(15 * 60)),
    ("reminder_queue", true, Some(30 * 60)),
    ("reminder_rule_queue", true, Some(15 * 60)),
    ("repeat_record_queue", true, Some(60 * 60)),
    ("saved_exports_queue", true, Some(6 * 60 * 60)),
    ("sumologic_logs_queue", true, Some(6 * 60 * 60)),
    ("send_report_throttled", true, Some(6 * 60 * 60)),
    ("sms_queue", true, Some(5 * 60)),
    ("submission_reprocessing_queue", true, Some(60 * 60)),
    ("ucr_indicator_queue", true, Some(60 * 60)),
    ("ucr_queue", true, Some(60 * 60)),
    ("user_import_queue", true, Some(60 * 60)),
    ("ush_background_tasks", true, Some(3 * 60 * 60)),
    ("geospatial_queue", true, Some(6 * 60 * 60)),
];

/// The names commcare-cloud gives its databases (`environment/constants.py`).
const DB_NAMES: &[(&str, &str)] = &[
    ("commcarehq_main_db_name", "commcarehq"),
    ("formplayer_db_name", "formplayer"),
    ("ucr_db_name", "commcarehq_ucr"),
    ("project_db_name", "commcarehq_project_db"),
    ("synclogs_db_name", "commcarehq_synclogs"),
    ("auditcare_db_name", "commcarehq_auditcare"),
    ("repeaters_db_name", "commcarehq_repeaters"),
    ("form_processing_proxy_db_name", "commcarehq_proxy"),
    (
        "form_processing_proxy_standby_db_name",
        "commcarehq_proxy_standby",
    ),
];

/// The hosts a key of `app-processes.yml` names (`None` stays `None`), as commcare-cloud's
/// `check_and_translate_hosts` translates it.
fn hosts_of(env: &Environment, key: &str) -> Vec<String> {
    key.split(',')
        .map(|item| match translate_item(&env.inventory, item) {
            Ok(Some(h)) => h.to_owned(),
            Ok(None) => "None".to_owned(),
            Err(_) => item.to_owned(),
        })
        .collect()
}

/// Every generated value, by name.
pub(crate) fn values(env: &Environment) -> Vec<(String, J)> {
    let mut out: Vec<(String, J)> = DB_NAMES
        .iter()
        .map(|(k, v)| ((*k).to_owned(), J::from(*v)))
        .collect();
    out.push(("ES_SETTINGS".into(), es_settings(env)));
    let Some(ap) = &env.app_processes else {
        return out;
    };
    // CELERY_FLOWER_URL: the one host that runs flower.
    let flower: Vec<String> = ap
        .celery_processes
        .iter()
        .filter(|(_, q)| q.as_ref().is_some_and(|q| q.contains_key("flower")))
        .flat_map(|(k, _)| hosts_of(env, k))
        .collect();
    if let [host] = flower.as_slice() {
        out.push((
            "CELERY_FLOWER_URL".into(),
            J::from(format!("http://{host}:5555")),
        ));
    }
    // CELERY_HEARTBEAT_THRESHOLDS: each queue some host runs, with its threshold.
    let mut queues = std::collections::BTreeSet::new();
    for (key, groups) in &ap.celery_processes {
        if hosts_of(env, key).iter().all(|h| h == "None") {
            continue;
        }
        for group in groups.iter().flat_map(|g| g.keys()) {
            queues.extend(group.split(',').map(str::to_owned));
        }
    }
    let overrides = ap
        .other
        .get("celery_heartbeat_thresholds")
        .and_then(crate::Value::as_mapping);
    let mut thresholds = Map::new();
    for (name, is_queue, default) in CELERY_PROCESSES {
        if !is_queue || !queues.contains(*name) {
            continue;
        }
        let given = overrides
            .and_then(|m| m.get(*name))
            .and_then(crate::Value::as_u64);
        thresholds.insert(
            (*name).to_owned(),
            given
                .map(J::from)
                .or(default.map(J::from))
                .unwrap_or(J::Null),
        );
    }
    out.push(("CELERY_HEARTBEAT_THRESHOLDS".into(), J::Object(thresholds)));
    // The pillows some host runs, sorted as Jinja's `sort` sorts (ignoring case).
    let mut pillows: Vec<String> = ap
        .pillows
        .values()
        .flatten()
        .flat_map(|p| p.keys())
        .filter(|p| !DEPRECATED_PILLOWS.contains(&p.as_str()))
        .cloned()
        .collect();
    pillows.sort_by_key(|p| p.to_lowercase());
    pillows.dedup();
    out.push(("active_pillow_names".into(), J::from(pillows)));
    out
}

/// `ES_SETTINGS`: `elasticsearch.yml`'s `settings` per index (commcare-cloud's
/// `ElasticsearchConfig`), with `default.number_of_replicas` 0 for one Elasticsearch host and 1
/// for more when the file does not set it.
pub(crate) fn es_settings(env: &Environment) -> J {
    const INDEXES: [&str; 10] = [
        "default",
        "case_search",
        "hqapps",
        "hqcases",
        "hqdomains",
        "hqgroups",
        "hqusers",
        "ledgers",
        "smslogs",
        "xforms",
    ];
    let path = env.dir.join("elasticsearch.yml");
    let file = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| crate::yaml::load(&t, &path).ok());
    let given = file.as_ref().and_then(|f| f.get("settings"));
    let mut out = Map::new();
    for index in INDEXES {
        let mut s = Map::new();
        for key in ["number_of_shards", "number_of_replicas"] {
            if let Some(n) = given
                .and_then(|g| g.get(index))
                .and_then(|i| i.get(key))
                .and_then(crate::Value::as_i64)
            {
                s.insert(key.to_owned(), J::from(n));
            }
        }
        if index == "default" && !s.contains_key("number_of_replicas") {
            let hosts = env
                .inventory
                .group_hosts("elasticsearch")
                .map_or(0, |h| h.len());
            s.insert(
                "number_of_replicas".into(),
                json!(if hosts < 2 { 0 } else { 1 }),
            );
        }
        out.insert(index.to_owned(), J::Object(s));
    }
    J::Object(out)
}
