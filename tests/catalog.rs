//! The catalog and policy surface against the real broker: the metadata API
//! over real mTLS, reloads (operator endpoint and SIGHUP) that keep the
//! running rules when a file is bad and apply a good change at once, and the
//! `mconnect catalog check` / `policy check` commands.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::{Value, json};
use support::{Bus, assert_refused, get};

const SOCIAL_BASIS: &str = "md-law-133-2008-art-8";
const SOCIAL_REASON: &str = "social-aid-eligibility";
const PERSON: &str = "2000000000015";
const PERSON_BY_IDNP: &str = "asp-rsp/person-by-idnp";

/// A call `apl-cahul` may make under the shipped policies.
fn person_call() -> mconnect_sdk::Call {
    get(
        &format!("/r1/{PERSON_BY_IDNP}?idnp={PERSON}"),
        SOCIAL_BASIS,
        SOCIAL_REASON,
        Some(PERSON),
    )
}

/// The admin API as a sandbox participant.
struct Admin(mconnect::connect::client::AdminClient);

/// An admin answer: status, content type and parsed body.
struct Answer {
    status: StatusCode,
    content_type: String,
    body: Value,
}

impl Admin {
    fn new(bus: &Bus, participant: &str) -> Admin {
        Admin(support::admin_client(
            bus.dir.path(),
            &bus.sandbox.manifest.broker.admin_url,
            participant,
        ))
    }

    async fn send(&self, method: Method, path: &str) -> Answer {
        let answer = self
            .0
            .send_full(self.0.plain(method, path, None).unwrap())
            .await
            .unwrap();
        Answer {
            status: answer.status,
            content_type: answer.header("content-type").unwrap_or_default().to_owned(),
            body: answer.body,
        }
    }

    async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path).await
    }
}

/// The keys of a service listing.
fn keys(answer: &Answer) -> Vec<String> {
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    answer.body["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["service"].as_str().unwrap().to_owned())
        .collect()
}

fn assert_malformed(answer: &Answer, parameter: &str) {
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
    assert_eq!(answer.content_type, "application/problem+json");
    assert_eq!(answer.body["code"], "request.malformed");
    let detail = answer.body["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("`{parameter}`")),
        "the detail names the parameter: {detail}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_endpoints_describe_the_catalog_and_own_grants() {
    let bus = Bus::start().await;
    let consumer = Admin::new(&bus, "apl-cahul");
    let operator = Admin::new(&bus, "age-operator");
    let shipped = mconnect::catalog::Catalog::load_dir(&support::repo().join("catalog")).unwrap();

    // The whole list, with what a client needs to choose a service.
    let all = consumer.get("/v1/services").await;
    assert_eq!(keys(&all).len(), shipped.services().count());
    let first = &all.body["services"][0];
    for field in ["service", "status", "method", "personal_data", "register"] {
        assert!(first[field].is_string(), "{field} in {first}");
    }
    for language in ["ro", "ru", "en"] {
        assert!(first["name"][language].is_string(), "{first}");
    }

    // Filters, alone and together.
    let asp_rsp = keys(&consumer.get("/v1/services?provider=asp-rsp").await);
    assert_eq!(
        asp_rsp,
        ["asp-rsp/person-by-idnp", "asp-rsp/persons-lookup"]
    );
    let active = keys(&consumer.get("/v1/services?status=active").await);
    assert_eq!(
        active.len(),
        shipped
            .services()
            .filter(|s| s.status.as_str() == "active")
            .count()
    );
    assert!(
        keys(&consumer.get("/v1/services?status=retired").await).is_empty(),
        "nothing shipped is retired"
    );
    let personal = keys(
        &consumer
            .get("/v1/services?personal_data=personal&provider=sfs")
            .await,
    );
    assert_eq!(personal, ["sfs/tax-debts"]);

    // Text search in each language, ignoring case and Romanian diacritics.
    for (q, expected) in [
        ("Vehiculele", "asp-vehicule/vehicles-by-owner"),
        ("detinator", "asp-vehicule/vehicles-by-owner"),
        (
            "%D0%BD%D0%B0%D0%BB%D0%BE%D0%B3%D0%BE%D0%BF%D0%BB%D0%B0%D1%82%D0%B5%D0%BB%D1%8C%D1%89%D0%B8%D0%BA%D0%B0",
            "sfs/tax-debts",
        ), // налогоплательщика
        ("ARREARS", "sfs/tax-debts"),
        ("real+estate", "asp-cadastru/properties-by-owner"),
    ] {
        let found = keys(&consumer.get(&format!("/v1/services?q={q}")).await);
        assert_eq!(found, [expected], "q={q}");
    }

    // Unknown, repeated or ill-valued filters are refused, naming them.
    assert_malformed(&consumer.get("/v1/services?colour=red").await, "colour");
    assert_malformed(&consumer.get("/v1/services?status=live").await, "status");
    assert_malformed(
        &consumer.get("/v1/services?personal_data=secret").await,
        "personal_data",
    );
    assert_malformed(
        &consumer.get("/v1/services?provider=a&provider=b").await,
        "provider",
    );
    assert_malformed(&consumer.get("/v1/registers?q=x").await, "q");

    // One service: schemas, data elements with meaning, query parameters,
    // the legal acts of its register.
    let one = consumer.get("/v1/services/asp-rsp/persons-lookup").await;
    assert_eq!(one.status, StatusCode::OK, "{}", one.body);
    assert_eq!(one.body["method"], "POST");
    assert_eq!(one.body["request_schema"]["type"], "object");
    assert_eq!(one.body["response_schema"]["type"], "object");
    let elements = one.body["data_elements"].as_array().unwrap();
    assert!(!elements.is_empty());
    assert!(elements[0]["meaning"]["ru"].is_string(), "{}", elements[0]);
    let acts = one.body["register"]["legal_acts"].as_array().unwrap();
    assert!(
        !acts.is_empty() && acts[0]["article"].is_string(),
        "{acts:?}"
    );
    let by_idnp = consumer.get("/v1/services/asp-rsp/person-by-idnp").await;
    assert_eq!(by_idnp.body["request_schema"], Value::Null);
    assert_eq!(by_idnp.body["query"][0]["name"], "idnp");
    assert_eq!(by_idnp.body["subject_required"], true);
    let unknown = consumer.get("/v1/services/asp-rsp/nothing").await;
    assert_eq!(
        (unknown.status, unknown.body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("catalog.unknown_service"))
    );

    // Registers.
    let registers = consumer.get("/v1/registers").await;
    assert_eq!(
        registers.body["registers"].as_array().unwrap().len(),
        shipped.registers().count()
    );
    let register = consumer.get("/v1/registers/rsp").await;
    assert_eq!(register.status, StatusCode::OK, "{}", register.body);
    assert_eq!(register.body["services"].as_array().unwrap().len(), 2);
    assert!(register.body["contact"]["email"].is_string());

    // DCAT-AP: a catalog with datasets and data services under legislation.
    let dcat = consumer.get("/v1/catalog/dcat").await;
    assert_eq!(dcat.status, StatusCode::OK);
    assert_eq!(dcat.content_type, "application/ld+json");
    assert_eq!(dcat.body["@type"], "dcat:Catalog");
    assert!(dcat.body["@context"]["dcat"].is_string());
    let datasets = dcat.body["dcat:dataset"].as_array().unwrap();
    let services = dcat.body["dcat:service"].as_array().unwrap();
    assert_eq!(datasets.len(), shipped.registers().count());
    assert_eq!(services.len(), shipped.services().count());
    for item in datasets.iter().chain(services) {
        let laws = item["dcatap:applicableLegislation"].as_array().unwrap();
        assert!(!laws.is_empty(), "legal basis on {}", item["@id"]);
        assert_eq!(laws[0]["@type"], "eli:LegalResource");
    }
    assert!(datasets.iter().all(|d| d["@type"] == "dcat:Dataset"));
    assert!(services.iter().all(|s| s["@type"] == "dcat:DataService"));

    // Own grants only, with what the consumer needs to call lawfully.
    let grants = consumer.get("/v1/grants").await;
    assert_eq!(grants.status, StatusCode::OK, "{}", grants.body);
    let list = grants.body["grants"].as_array().unwrap();
    assert!(!list.is_empty());
    assert!(list.iter().all(|g| g["consumer"] == "apl-cahul"));
    let social = list
        .iter()
        .find(|g| g["id"] == "apl-cahul-social-aid")
        .unwrap();
    let basis = &social["legal_bases"][0];
    for field in ["id", "act", "article"] {
        assert!(basis[field].is_string(), "{field} in {basis}");
    }
    assert_eq!(social["purposes"][0]["code"], SOCIAL_REASON);
    assert!(social["fields"][PERSON_BY_IDNP].as_array().unwrap().len() > 1);
    assert_eq!(social["status"], "active");
    assert_eq!(social["in_force"], true);
    assert_eq!(social["origin"]["kind"], "file");
    assert!(social["rate_limit"]["requests"].as_u64().unwrap() >= 1);
    assert!(social["valid_from"].as_str().unwrap().ends_with('Z'));
    let nosy = consumer.get("/v1/grants?consumer=apl-balti").await;
    assert_eq!(
        (nosy.status, nosy.body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("admin.forbidden"))
    );
    let same = consumer.get("/v1/grants?consumer=apl-cahul").await;
    assert_eq!(same.body["grants"], grants.body["grants"]);
    let by_operator = operator.get("/v1/grants?consumer=apl-balti").await;
    assert_eq!(by_operator.status, StatusCode::OK);
    let balti = by_operator.body["grants"].as_array().unwrap();
    assert!(!balti.is_empty() && balti.iter().all(|g| g["consumer"] == "apl-balti"));
    assert_malformed(&consumer.get("/v1/grants?service=x").await, "service");

    // Every endpoint is described.
    let openapi = consumer.get("/v1/openapi.json").await;
    for path in [
        "/v1/services",
        "/v1/services/{provider}/{code}",
        "/v1/registers",
        "/v1/catalog/dcat",
        "/v1/grants",
        "/v1/reload",
    ] {
        assert!(openapi.body["paths"][path].is_object(), "{path} in OpenAPI");
    }
    bus.stop().await;
}

/// Copies the shipped catalog and policies into `dir` (schemas included).
fn copy_rules(dir: &Path) -> (PathBuf, PathBuf) {
    let catalog = dir.join("catalog");
    let policies = dir.join("policies");
    for (from, to) in [("catalog", &catalog), ("policies", &policies)] {
        copy_dir(&support::repo().join(from), to);
    }
    (catalog, policies)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Reads, changes and writes back a JSON file.
fn edit(path: &Path, change: impl FnOnce(&mut Value)) {
    let mut value: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    change(&mut value);
    std::fs::write(path, serde_json::to_string_pretty(&value).unwrap()).unwrap();
}

/// Suspends every grant of apl-cahul that covers person-by-idnp, so the
/// decision for that pair becomes `policy.grant_suspended`. Such grants live
/// in more than one file (apl-cahul.json, and the representation grant of
/// adapters-sign-power.json), so every policy file is looked at.
fn suspend_person_grants(policies: &Path) {
    let mut files: Vec<PathBuf> = std::fs::read_dir(policies)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    for path in files {
        edit(&path, |file| {
            for grant in file["grants"].as_array_mut().unwrap() {
                if grant["consumer"] == "apl-cahul"
                    && grant["services"]
                        .as_array()
                        .unwrap()
                        .contains(&json!(PERSON_BY_IDNP))
                {
                    grant["status"] = json!("suspended");
                }
            }
        });
    }
}

/// Starts the sandbox on copies of the rules in a temporary directory.
async fn bus_on_copies() -> (Bus, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (catalog, policies) = copy_rules(&dir.path().join("rules"));
    let mut args = support::args(dir.path());
    args.catalog = Some(catalog.clone());
    args.policies = Some(policies.clone());
    let sandbox = mconnect_cli::sandbox::start(&args)
        .await
        .expect("sandbox starts");
    (Bus { sandbox, dir }, catalog, policies)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_refuses_bad_files_keeps_serving_and_applies_changes_at_once() {
    let (bus, catalog, policies) = bus_on_copies().await;
    let operator = Admin::new(&bus, "age-operator");
    let cahul = bus.consumer("apl-cahul");
    let audit = bus.sandbox.broker.broker.audit().clone();
    let passes = |out: &mconnect_sdk::CallOutcome| {
        assert_eq!(
            out.status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&out.body)
        );
    };
    passes(&cahul.call(&person_call()).await.unwrap());

    // A good reload of unchanged files: accepted and audited.
    let before = audit.tree_size();
    let rules = bus.sandbox.broker.broker.live_rules();
    let version = rules.version();
    let ok = operator.send(Method::POST, "/v1/reload").await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert_eq!(rules.version(), version + 1, "a swap raises the version");
    assert_eq!(ok.body["reloaded"], true);
    assert_eq!(audit.tree_size(), before + 1);
    let (record, _) = audit.record(before).unwrap().unwrap();
    assert_eq!(record.event, "admin.change");
    assert_eq!(record.service.as_deref(), Some("rules.reload"));
    assert_eq!(record.consumer.as_deref(), Some("age-operator"));

    // Only operators reload.
    let refused = Admin::new(&bus, "apl-cahul")
        .send(Method::POST, "/v1/reload")
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);

    // A broken catalog file: refused with file and pointer, the old rules serve.
    let population = catalog.join("population.json");
    let original = std::fs::read(&population).unwrap();
    edit(&population, |file| {
        file["services"][0]["status"] = json!("live")
    });
    let before = audit.tree_size();
    let bad = operator.send(Method::POST, "/v1/reload").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
    assert_eq!(bad.content_type, "application/problem+json");
    assert_eq!(bad.body["code"], "admin.invalid");
    assert!(
        bad.body["file"]
            .as_str()
            .unwrap()
            .ends_with("population.json"),
        "{}",
        bad.body
    );
    assert_eq!(bad.body["pointer"], "/services/0/status");
    assert!(
        bad.body["detail"]
            .as_str()
            .unwrap()
            .contains("population.json")
    );
    assert_eq!(
        audit.tree_size(),
        before + 1,
        "the refused reload is audited"
    );
    let (record, _) = audit.record(before).unwrap().unwrap();
    assert_eq!(record.http_status, 400);
    passes(&cahul.call(&person_call()).await.unwrap());
    std::fs::write(&population, original).unwrap();

    // A broken policy file: the same.
    let cahul_file = policies.join("apl-cahul.json");
    let original = std::fs::read(&cahul_file).unwrap();
    edit(&cahul_file, |file| {
        file["grants"][0]["consumer"] = json!("apl-nowhere");
    });
    let bad = operator.send(Method::POST, "/v1/reload").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
    assert!(
        bad.body["file"]
            .as_str()
            .unwrap()
            .ends_with("apl-cahul.json")
    );
    assert_eq!(bad.body["pointer"], "/grants/0/consumer");
    assert!(bad.body["reason"].as_str().unwrap().contains("apl-nowhere"));
    passes(&cahul.call(&person_call()).await.unwrap());
    std::fs::write(&cahul_file, original).unwrap();
    // /metrics counts both refusals; neither changed the rules' version.
    assert_eq!(rules.version(), version + 1);
    let (_, metrics) = support::plain_get(bus.sandbox.broker.ops_addr(), "/metrics").await;
    assert!(
        metrics.contains("mconnect_rules_reload_failures_total{reason=\"invalid\"} 2\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("mconnect_rules_version {}\n", version + 1)),
        "{metrics}"
    );

    // A suspended grant is in force on the data plane as soon as it is reloaded.
    suspend_person_grants(&policies);
    let ok = operator.send(Method::POST, "/v1/reload").await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert_refused(
        &cahul.call(&person_call()).await.unwrap(),
        403,
        "policy.grant_suspended",
    );
    let grants = Admin::new(&bus, "apl-cahul").get("/v1/grants").await;
    let social = grants.body["grants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["id"] == "apl-cahul-social-aid")
        .cloned()
        .unwrap();
    assert_eq!(social["status"], "suspended");
    assert_eq!(social["in_force"], false);
    bus.stop().await;
}

/// A `mconnect sandbox` child process; stopped with SIGTERM when dropped.
struct Child {
    process: std::process::Child,
    stderr: PathBuf,
}

impl Child {
    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.process.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name}");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        // SIGTERM lets the sandbox stop its example registers too.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.process.id().to_string())
            .status();
        for _ in 0..100 {
            if matches!(self.process.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_a_running_sandbox() {
    let dir = tempfile::tempdir().unwrap();
    let (catalog, policies) = copy_rules(dir.path());
    let sandbox_dir = dir.path().join("bus");
    let stderr = dir.path().join("stderr.log");
    let mut process = Command::new(support::mconnect_bin())
        .arg("sandbox")
        .arg("--dir")
        .arg(&sandbox_dir)
        .args(["--data-port", "0", "--admin-port", "0"])
        .arg("--catalog")
        .arg(&catalog)
        .arg("--policies")
        .arg(&policies)
        .arg("--participants")
        .arg(support::repo().join("examples/sandbox/participants.json"))
        .arg("--examples-dir")
        .arg(support::examples_dir())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let stdout = process.stdout.take().unwrap();
    let child = Child { process, stderr };

    // Wait (bounded) for the welcome line: by then sandbox.json is written.
    let (ready, started) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if line.contains("sandbox is running") {
                let _ = ready.send(());
            }
        }
    });
    started
        .recv_timeout(Duration::from_secs(120))
        .unwrap_or_else(|_| panic!("the sandbox did not start: {}", child.log()));
    let manifest = mconnect_sdk::SandboxManifest::read(&sandbox_dir).unwrap();
    let cahul = manifest.consumer(&sandbox_dir, "apl-cahul").unwrap();
    let out = cahul.call(&person_call()).await.unwrap();
    assert_eq!(
        out.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&out.body)
    );

    // A broken file and SIGHUP: refused, logged, the old rules still serve.
    let cahul_file = policies.join("apl-cahul.json");
    let original = std::fs::read(&cahul_file).unwrap();
    edit(&cahul_file, |file| {
        file["grants"][0]["valid_from"] = json!("someday")
    });
    child.signal("HUP");
    let mut logged = false;
    for _ in 0..100 {
        if child.log().contains("/grants/0/valid_from") {
            logged = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        logged,
        "the refusal names file and pointer: {}",
        child.log()
    );
    let out = cahul.call(&person_call()).await.unwrap();
    assert_eq!(
        out.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&out.body)
    );
    std::fs::write(&cahul_file, original).unwrap();

    // A suspended grant and SIGHUP: in force on the data plane.
    suspend_person_grants(&policies);
    child.signal("HUP");
    let mut last = String::new();
    for _ in 0..100 {
        let out = cahul.call(&person_call()).await.unwrap();
        last = support::code(&out);
        if out.status == StatusCode::FORBIDDEN {
            assert_refused(&out, 403, "policy.grant_suspended");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last, "policy.grant_suspended", "{}", child.log());
    assert!(
        child
            .log()
            .contains("SIGHUP: catalog and policies reloaded")
    );
}

fn mconnect(args: &[&str], paths: &[&Path]) -> (Option<i32>, String) {
    let out = Command::new(support::mconnect_bin())
        .args(args)
        .args(paths)
        .current_dir(support::repo())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[test]
fn check_commands_pass_shipped_files_and_name_file_and_pointer_of_problems() {
    // The shipped files, run from the repository root with the defaults.
    let (code, out) = mconnect(&["catalog", "check", "catalog"], &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("registers") && out.contains("services"),
        "{out}"
    );
    let (code, out) = mconnect(
        &["policy", "check", "policies", "--catalog", "catalog"],
        &[],
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("grants for"), "{out}");

    // Broken copies: exit 1, every problem as `file: at /pointer: reason`.
    let dir = tempfile::tempdir().unwrap();
    let (catalog, policies) = copy_rules(dir.path());
    edit(&catalog.join("vehicles.json"), |file| {
        file["owner"]["idno"] = json!("1003600000000");
        file["services"][0]["method"] = json!(42);
    });
    let (code, out) = mconnect(&["catalog", "check"], &[&catalog]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("vehicles.json: at /services/0/method:"),
        "{out}"
    );
    let (code, out) = mconnect(
        &["policy", "check"],
        &[&policies, Path::new("--catalog"), &catalog],
    );
    assert_eq!(
        code,
        Some(1),
        "a broken catalog fails the policy check too: {out}"
    );
    assert!(
        out.contains("vehicles.json: at /services/0/method:"),
        "{out}"
    );

    let (_, fresh) = copy_rules(&dir.path().join("fresh"));
    edit(&fresh.join("apl-balti.json"), |file| {
        file["grants"][0]["services"][0] = json!("asp-rsp/no-such-service");
        file["grants"][0]["consumer"] = json!("apl-nowhere");
    });
    let shipped_catalog = support::repo().join("catalog");
    let (code, out) = mconnect(
        &["policy", "check"],
        &[&fresh, Path::new("--catalog"), &shipped_catalog],
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("apl-balti.json: at /grants/0/consumer: unknown participant"),
        "{out}"
    );
    assert!(
        out.contains("apl-balti.json: at /grants/0/services/0: unknown service"),
        "{out}"
    );
    assert!(out.contains("problems found"), "{out}");

    // An unreadable participants file is an error, not a pass.
    let (code, out) = mconnect(
        &[
            "policy",
            "check",
            "policies",
            "--participants",
            "/nonexistent.json",
        ],
        &[],
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("/nonexistent.json"), "{out}");
}
