//! The `mconnect` binary against a broker it knows only by address and
//! credentials, as an operator or auditor runs it against a real one: the
//! settings come from explicit flags, the environment or a profile file
//! (never `--sandbox`), the output is read as tables and as `--json`, and
//! each documented exit code is produced by what it documents.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use support::Bus;

/// What a run of the binary left.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\n{}", self.stdout, self.stderr))
    }

    fn lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    #[track_caller]
    fn expect(&self, code: i32) -> &Run {
        assert_eq!(
            self.code,
            Some(code),
            "expected exit {code}\nstdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Where a participant's files are, and the broker's addresses: what an
/// operator of a real broker would have been handed.
struct Remote {
    admin: String,
    data: String,
    pki: PathBuf,
    /// The working directory of every run: empty, so no `./sandbox` is
    /// found by accident.
    cwd: tempfile::TempDir,
}

impl Remote {
    fn of(bus: &Bus) -> Remote {
        Remote {
            admin: bus.sandbox.manifest.broker.admin_url.clone(),
            data: bus.sandbox.manifest.broker.data_url.clone(),
            pki: bus.pki(),
            cwd: tempfile::tempdir().unwrap(),
        }
    }

    fn file(&self, name: &str) -> String {
        self.pki.join(name).to_str().unwrap().to_string()
    }

    /// The flags naming `who`'s certificate and key and the CA's
    /// certificate.
    fn identity_flags(&self, who: &str) -> Vec<String> {
        vec![
            "--cert".into(),
            self.file(&format!("{who}.cert.pem")),
            "--key".into(),
            self.file(&format!("{who}.key.pem")),
            "--ca".into(),
            self.file("ca.cert.pem"),
        ]
    }

    /// The explicit flags naming the admin API and `who`'s files.
    fn admin_flags(&self, who: &str) -> Vec<String> {
        let mut flags = vec!["--admin".into(), self.admin.clone()];
        flags.extend(self.identity_flags(who));
        flags
    }

    /// The explicit flags naming the data plane, `who`'s files and the
    /// broker certificate.
    fn data_flags(&self, who: &str) -> Vec<String> {
        let mut flags = vec!["--broker".into(), self.data.clone()];
        flags.extend(self.identity_flags(who));
        flags.extend(["--broker-cert".into(), self.file("broker.cert.pem")]);
        flags
    }

    /// The environment naming the admin API and `who`'s files.
    fn admin_env(&self, who: &str) -> Vec<(String, String)> {
        vec![
            ("MCONNECT_ADMIN".into(), self.admin.clone()),
            (
                "MCONNECT_CERT".into(),
                self.file(&format!("{who}.cert.pem")),
            ),
            ("MCONNECT_KEY".into(), self.file(&format!("{who}.key.pem"))),
            ("MCONNECT_CA".into(), self.file("ca.cert.pem")),
        ]
    }

    /// Runs `mconnect ARGS` with exactly the `MCONNECT_*` variables of `env`.
    async fn run(&self, args: &[String], env: &[(String, String)]) -> Run {
        let mut command = tokio::process::Command::new(support::mconnect_bin());
        command.current_dir(self.cwd.path()).args(args);
        for (name, _) in std::env::vars() {
            if name.starts_with("MCONNECT_") {
                command.env_remove(name);
            }
        }
        command.envs(env.iter().map(|(k, v)| (k, v)));
        let out = tokio::time::timeout(Duration::from_secs(60), command.output())
            .await
            .expect("the command ends within a minute")
            .unwrap();
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Issues a certificate of the sandbox CA for `name` with `mconnect
    /// pki issue`; returns its fingerprint.
    async fn issue(&self, name: &str) -> String {
        let run = self
            .run(
                &strings(&["pki", "issue", "--name", name, "--dir"])
                    .into_iter()
                    .chain([self.pki.to_str().unwrap().to_string()])
                    .collect::<Vec<_>>(),
                &[],
            )
            .await;
        run.expect(0);
        run.stdout.trim().to_string()
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// The command words and their arguments, then the target flags.
fn args(flags: &[String], rest: &[&str]) -> Vec<String> {
    strings(rest)
        .into_iter()
        .chain(flags.iter().cloned())
        .collect()
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn write_private(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn participants_are_managed_with_flags_environment_and_a_profile() {
    let bus = Bus::start().await;
    let remote = Remote::of(&bus);
    let operator = remote.admin_flags("age-operator");
    let first = remote.issue("apl-orhei").await;
    let cert = remote.file("apl-orhei.cert.pem");

    // add, with explicit flags: a table by default.
    let add = [
        "participant",
        "add",
        "apl-orhei",
        "--name",
        "Primăria Orhei",
        "--idno",
        "1003603000063",
        "--role",
        "consumer",
        "--certificate",
        &cert,
    ];
    let run = remote.run(&args(&operator, &add), &[]).await;
    run.expect(0);
    assert!(
        run.stdout.contains("apl-orhei: registered"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains(&first), "{}", run.stdout);
    // A second add would replace it: refused unless --replace says so.
    let run = remote.run(&args(&operator, &add), &[]).await;
    run.expect(3);
    assert!(run.stderr.contains("already registered"), "{}", run.stderr);
    let replace: Vec<&str> = add
        .iter()
        .copied()
        .chain(["--replace", "--role", "auditor"])
        .collect();
    remote.run(&args(&operator, &replace), &[]).await.expect(0);

    // list, with the environment: a table, and the API's JSON.
    let env = remote.admin_env("age-operator");
    let run = remote.run(&strings(&["participant", "list"]), &env).await;
    run.expect(0);
    let header = run.stdout.lines().next().unwrap();
    assert!(header.starts_with("ID "), "{header}");
    let row = run
        .stdout
        .lines()
        .find(|l| l.starts_with("apl-orhei "))
        .expect("apl-orhei is listed");
    // Columns are aligned: ORGANISATION starts at the same place on both lines.
    assert_eq!(
        header.find("ORGANISATION"),
        row.find("Primăria Orhei")
            .map(|byte| row[..byte].chars().count())
    );
    let listed = remote
        .run(&strings(&["participant", "list", "--json"]), &env)
        .await;
    listed.expect(0);
    let entry = listed.json()["participants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "apl-orhei")
        .cloned()
        .expect("apl-orhei in the JSON");
    assert_eq!(entry["organisation"]["name"], "Primăria Orhei");
    assert_eq!(entry["roles"], serde_json::json!(["consumer", "auditor"]));

    // certificate add and remove, and show, with a profile file.
    let second = remote.issue("apl-orhei-next").await;
    let profiles = remote.cwd.path().join("profiles.toml");
    let profile = format!(
        "[operator]\nadmin = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\nca = \"{}\"\n",
        remote.admin,
        remote.file("age-operator.cert.pem"),
        remote.file("age-operator.key.pem"),
        remote.file("ca.cert.pem"),
    );
    write_private(&profiles, &profile, 0o600);
    let by_profile = vec![(
        "MCONNECT_PROFILES".to_string(),
        profiles.to_str().unwrap().to_string(),
    )];
    let run = remote
        .run(
            &strings(&[
                "participant",
                "--profile",
                "operator",
                "certificate",
                "add",
                "apl-orhei",
                &remote.file("apl-orhei-next.cert.pem"),
                "--json",
            ]),
            &by_profile,
        )
        .await;
    run.expect(0);
    assert_eq!(run.json()["fingerprint"], second.as_str());
    let run = remote
        .run(
            &strings(&[
                "participant",
                "certificate",
                "remove",
                "apl-orhei",
                &first,
                "--profile",
                "operator",
            ]),
            &by_profile,
        )
        .await;
    run.expect(0);
    assert!(run.stdout.contains(&format!("certificate {first} removed")));
    let shown = remote
        .run(
            &strings(&["participant", "show", "apl-orhei", "--profile", "operator"]),
            &by_profile,
        )
        .await;
    shown.expect(0);
    assert!(shown.stdout.contains(&second), "{}", shown.stdout);
    assert!(!shown.stdout.contains(&first), "{}", shown.stdout);
    assert!(shown.stdout.contains("Primăria Orhei"), "{}", shown.stdout);

    // endpoints set: by --endpoint, then back by a JSON file.
    let show = |id: &str| {
        let flags = operator.clone();
        let id = id.to_string();
        let remote = &remote;
        async move {
            let run = remote
                .run(&args(&flags, &["participant", "show", &id, "--json"]), &[])
                .await;
            run.expect(0);
            run.json()
        }
    };
    let original = show("asp-rsp").await["endpoints"].clone();
    let run = remote
        .run(
            &args(
                &operator,
                &[
                    "participant",
                    "endpoints",
                    "set",
                    "asp-rsp",
                    "--endpoint",
                    "person-by-idnp=https://127.0.0.1:1/rsp",
                    "--endpoint",
                    "https://127.0.0.1:1",
                ],
            ),
            &[],
        )
        .await;
    run.expect(0);
    assert!(
        run.stdout
            .contains("person-by-idnp  https://127.0.0.1:1/rsp"),
        "{}",
        run.stdout
    );
    assert_eq!(
        show("asp-rsp").await["endpoints"],
        serde_json::json!([
            {"service": "person-by-idnp", "url": "https://127.0.0.1:1/rsp"},
            {"url": "https://127.0.0.1:1"}
        ])
    );
    let file = remote.cwd.path().join("endpoints.json");
    std::fs::write(&file, original.to_string()).unwrap();
    remote
        .run(
            &args(
                &operator,
                &[
                    "participant",
                    "endpoints",
                    "set",
                    "asp-rsp",
                    "--file",
                    file.to_str().unwrap(),
                ],
            ),
            &[],
        )
        .await
        .expect(0);
    assert_eq!(show("asp-rsp").await["endpoints"], original);

    // Refused by the broker (4xx): exit 3, the problem on stderr, and as
    // JSON on stdout with --json.
    let run = remote
        .run(
            &args(
                &operator,
                &[
                    "participant",
                    "endpoints",
                    "set",
                    "apl-orhei",
                    "--endpoint",
                    "https://127.0.0.1:1",
                ],
            ),
            &[],
        )
        .await;
    run.expect(3);
    assert!(run.stderr.contains("apl-orhei"), "{}", run.stderr);
    let consumer = remote.admin_flags("apl-cahul");
    let run = remote
        .run(
            &args(
                &consumer,
                &[
                    "participant",
                    "add",
                    "apl-x",
                    "--name",
                    "X",
                    "--idno",
                    "1003603000063",
                    "--role",
                    "consumer",
                    "--certificate",
                    &cert,
                    "--json",
                    "--replace",
                ],
            ),
            &[],
        )
        .await;
    run.expect(3);
    assert_eq!(run.json()["code"], "admin.forbidden");
    remote
        .run(&args(&operator, &["participant", "show", "nobody"]), &[])
        .await
        .expect(3);

    // Usage errors: 64, before anything is sent.
    let add_y = |flags: &[&'static str]| {
        let mut words = vec!["participant", "add", "apl-y", "--name", "Y"];
        words.extend_from_slice(flags);
        words.extend(["--certificate", cert.as_str()]);
        words
    };
    for bad in [
        // No --idno; an --idno that is not one; a role there is not.
        add_y(&["--role", "consumer"]),
        add_y(&["--idno", "123", "--role", "consumer"]),
        add_y(&["--idno", "1003603000063", "--role", "king"]),
        vec![
            "participant",
            "certificate",
            "remove",
            "apl-orhei",
            "not-a-fingerprint",
        ],
        vec![
            "participant",
            "endpoints",
            "set",
            "asp-rsp",
            "--endpoint",
            "no-url-here",
        ],
        vec!["participant", "show", "Not_An_Id"],
        vec!["participant", "frobnicate"],
    ] {
        let run = remote.run(&args(&operator, &bad), &[]).await;
        run.expect(64);
    }
    // No broker named anywhere, and no ./sandbox: a usage error naming the ways.
    let run = remote.run(&strings(&["participant", "list"]), &[]).await;
    run.expect(64);
    assert!(run.stderr.contains("--admin URL"), "{}", run.stderr);

    // Unreachable: 4.
    let mut nowhere = operator.clone();
    nowhere[1] = format!("https://127.0.0.1:{}", closed_port());
    let run = remote
        .run(&args(&nowhere, &["participant", "list"]), &[])
        .await;
    run.expect(4);
    assert!(run.stderr.contains(&nowhere[1]), "{}", run.stderr);

    // Precedence: a flag over the environment, the environment over a
    // profile.
    let unreachable = format!("https://127.0.0.1:{}", closed_port());
    let mut env_elsewhere = env.clone();
    env_elsewhere[0].1 = unreachable.clone();
    remote
        .run(
            &strings(&["participant", "list", "--admin", &remote.admin]),
            &env_elsewhere,
        )
        .await
        .expect(0);
    write_private(
        &profiles,
        &profile.replace(&remote.admin, &unreachable),
        0o600,
    );
    let mut env_over_profile = by_profile.clone();
    env_over_profile.push(("MCONNECT_ADMIN".into(), remote.admin.clone()));
    env_over_profile.push(("MCONNECT_PROFILE".into(), "operator".into()));
    remote
        .run(&strings(&["participant", "list"]), &env_over_profile)
        .await
        .expect(0);
    remote
        .run(
            &strings(&["participant", "list"]),
            &env_over_profile[..1]
                .iter()
                .cloned()
                .chain([("MCONNECT_PROFILE".to_string(), "operator".to_string())])
                .collect::<Vec<_>>(),
        )
        .await
        .expect(4);

    // A profile file or key others may read is refused, as ssh refuses it.
    write_private(&profiles, &profile, 0o644);
    let run = remote
        .run(
            &strings(&["participant", "list", "--profile", "operator"]),
            &by_profile,
        )
        .await;
    run.expect(64);
    assert!(run.stderr.contains("mode 0644"), "{}", run.stderr);
    assert!(run.stderr.contains("chmod 600"), "{}", run.stderr);
    let open_key = remote.cwd.path().join("open.key.pem");
    write_private(
        &open_key,
        &std::fs::read_to_string(remote.pki.join("age-operator.key.pem")).unwrap(),
        0o644,
    );
    let mut flags = operator.clone();
    flags[5] = open_key.to_str().unwrap().to_string();
    let run = remote
        .run(&args(&flags, &["participant", "list"]), &[])
        .await;
    run.expect(64);
    assert!(run.stderr.contains("open.key.pem"), "{}", run.stderr);
    // A key that is not the certificate's.
    flags[5] = remote.file("apl-cahul.key.pem");
    let run = remote
        .run(&args(&flags, &["participant", "list"]), &[])
        .await;
    run.expect(64);
    assert!(run.stderr.contains("does not belong"), "{}", run.stderr);

    // connect, through the same explicit flags: a table, JSON, a refusal.
    let run = remote
        .run(&args(&operator, &["connect", "list"]), &[])
        .await;
    run.expect(0);
    let listed = remote
        .run(&args(&operator, &["connect", "list", "--json"]), &[])
        .await;
    listed.expect(0);
    let requests = listed.json()["connection_requests"]
        .as_array()
        .unwrap()
        .len();
    if requests == 0 {
        assert!(
            run.stdout.contains("no connection requests"),
            "{}",
            run.stdout
        );
    } else {
        assert!(run.stdout.starts_with("ID "), "{}", run.stdout);
    }
    remote
        .run(
            &args(&operator, &["connect", "show", "cr-2000-000001"]),
            &[],
        )
        .await
        .expect(3);

    bus.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_and_audit_reads_through_explicit_flags() {
    let bus = Bus::start().await;
    let remote = Remote::of(&bus);
    let tries = bus.sandbox.manifest.tries.clone();

    // Every call of the try list, through explicit flags only.
    let mut seqs = Vec::new();
    for entry in &tries {
        let mut rest = vec![
            "call".to_string(),
            "--method".into(),
            entry.method.clone(),
            "--path".into(),
            entry.path.clone(),
            "--basis".into(),
            entry.basis.clone(),
            "--reason".into(),
            entry.reason.clone(),
            "--json".into(),
        ];
        if let Some(body) = &entry.body {
            rest.extend(["--body".to_string(), body.to_string()]);
        }
        if let Some(subject) = &entry.subject {
            rest.extend(["--subject".to_string(), subject.clone()]);
        }
        if let Some(user) = &entry.calling_user {
            rest.extend(["--user".to_string(), user.clone()]);
        }
        let mut flags = remote.data_flags(&entry.client);
        // The sandbox signs some participants with an algorithm their key
        // does not default to.
        let alg = &bus
            .sandbox
            .manifest
            .participants
            .iter()
            .find(|p| p.id == entry.client)
            .unwrap()
            .alg;
        flags.extend(["--alg".to_string(), alg.clone()]);
        let run = remote.run(&[rest, flags].concat(), &[]).await;
        run.expect(0);
        let out = run.json();
        assert!(out["status"].as_u64().unwrap() < 300, "{out}");
        assert_eq!(out["receipt"]["verified"], true, "{out}");
        seqs.push(out["receipt"]["audit_seq"].as_u64().unwrap());
    }
    // The table form of the first, with --client naming the caller over
    // the certificate's common name.
    let first = &tries[0];
    let mut flags = remote.data_flags(&first.client);
    flags.extend(strings(&["--client", &first.client]));
    let run = remote
        .run(
            &args(
                &flags,
                &[
                    "call",
                    "--path",
                    &first.path,
                    "--basis",
                    &first.basis,
                    "--reason",
                    &first.reason,
                    "--subject",
                    first.subject.as_deref().unwrap(),
                ],
            ),
            &[],
        )
        .await;
    run.expect(0);
    assert!(run.stdout.contains("receipt: verified"), "{}", run.stdout);
    // Refused by policy: 3, with a verified receipt.
    let run = remote
        .run(
            &args(
                &remote.data_flags(&first.client),
                &[
                    "call",
                    "--path",
                    &first.path,
                    "--basis",
                    "no-such-basis",
                    "--reason",
                    &first.reason,
                    "--json",
                ],
            ),
            &[],
        )
        .await;
    run.expect(3);
    assert_eq!(run.json()["receipt"]["verified"], true);
    // A receipt checked against the wrong certificate does not verify: 1.
    let mut wrong = remote.data_flags(&first.client);
    wrong[9] = remote.file("ca.cert.pem");
    let run = remote
        .run(
            &args(
                &wrong,
                &[
                    "call",
                    "--path",
                    &first.path,
                    "--basis",
                    &first.basis,
                    "--reason",
                    &first.reason,
                ],
            ),
            &[],
        )
        .await;
    run.expect(1);
    assert!(
        run.stdout.contains("receipt: NOT verified"),
        "{}",
        run.stdout
    );
    // No broker certificate, no call: receipts could not be checked.
    let run = remote
        .run(
            &args(
                &remote.data_flags(&first.client)[..8],
                &["call", "--path", &first.path],
            ),
            &[],
        )
        .await;
    run.expect(64);
    assert!(run.stderr.contains("--broker-cert"), "{}", run.stderr);

    // The auditor, through explicit flags, with the basis and purpose
    // from the environment.
    let auditor = &bus.sandbox.manifest.auditor;
    let mut audit_flags = remote.admin_flags(&auditor.id);
    audit_flags.extend(strings(&["--broker-cert", &remote.file("broker.cert.pem")]));
    let read_env = vec![
        ("MCONNECT_AUDIT_BASIS".to_string(), auditor.basis.clone()),
        ("MCONNECT_AUDIT_REASON".to_string(), auditor.reason.clone()),
    ];
    let export = |rest: Vec<String>| {
        let flags = audit_flags.clone();
        let env = read_env.clone();
        let remote = &remote;
        async move {
            let run = remote
                .run(&[strings(&["audit", "export"]), flags, rest].concat(), &env)
                .await;
            run.expect(0);
            let lines = run.lines();
            assert!(
                lines[0]["tree_head"]["tree_size"].as_u64().is_some(),
                "{lines:?}"
            );
            lines[1..].to_vec()
        }
    };
    let exchanges = export(strings(&["--event", "exchange"])).await;
    assert!(exchanges.len() >= tries.len() + 2, "{}", exchanges.len());
    for seq in &seqs {
        assert!(
            exchanges.iter().any(|l| l["seq"] == *seq),
            "record {seq} exported"
        );
    }
    // Each filter does what its help says.
    let cahul = export(strings(&["--event", "exchange", "--client", "apl-cahul"])).await;
    assert!(!cahul.is_empty());
    assert!(cahul.iter().all(|l| l["record"]["consumer"] == "apl-cahul"));
    assert!(cahul.len() < exchanges.len());
    let service = &first.service;
    let by_service = export(strings(&["--service", service])).await;
    assert!(!by_service.is_empty());
    assert!(
        by_service
            .iter()
            .all(|l| l["record"]["service"] == service.as_str())
    );
    let subject = first.subject.clone().unwrap();
    let by_subject = export(strings(&["--subject", &subject])).await;
    assert!(!by_subject.is_empty());
    assert!(by_subject.iter().all(|l| {
        l["record"]["subject"] == subject.as_str()
            || l["record"]["subjects"]
                .as_array()
                .is_some_and(|s| s.iter().any(|x| x == subject.as_str()))
    }));
    let reads = export(strings(&["--event", "audit.read"])).await;
    assert!(!reads.is_empty());
    assert!(reads.iter().all(|l| l["record"]["event"] == "audit.read"));
    // --from is inclusive and --to exclusive, at a record's own time.
    let middle = &exchanges[exchanges.len() / 2];
    let at = middle["record"]["received_at"]
        .as_str()
        .unwrap()
        .to_string();
    let from = export(strings(&["--event", "exchange", "--from", &at])).await;
    let to = export(strings(&["--event", "exchange", "--to", &at])).await;
    assert!(from.iter().any(|l| l["seq"] == middle["seq"]));
    assert!(!to.iter().any(|l| l["seq"] == middle["seq"]));
    // The calls were made one after the other, so time and seq agree.
    let middle_seq = middle["seq"].as_u64().unwrap();
    assert!(
        from.iter()
            .all(|l| l["seq"].as_u64().unwrap() >= middle_seq)
    );
    assert!(to.iter().all(|l| l["seq"].as_u64().unwrap() < middle_seq));
    assert_eq!(from.len() + to.len(), exchanges.len());
    // --limit is the page size, --pages bounds the pages, none reads all.
    let one = export(strings(&[
        "--event", "exchange", "--limit", "1", "--pages", "1",
    ]))
    .await;
    assert_eq!(one.len(), 1);
    let two = export(strings(&[
        "--event", "exchange", "--limit", "1", "--pages", "2",
    ]))
    .await;
    assert_eq!(two.len(), 2);
    let all = export(strings(&["--event", "exchange", "--limit", "2"])).await;
    assert_eq!(all.len(), exchanges.len());
    // --cursor goes on from a query's page.
    let page = remote
        .run(
            &[
                strings(&[
                    "audit", "query", "--event", "exchange", "--limit", "1", "--json",
                ]),
                audit_flags.clone(),
            ]
            .concat(),
            &read_env,
        )
        .await;
    page.expect(0);
    let page = page.json();
    let table = remote
        .run(
            &[
                strings(&["audit", "query", "--event", "exchange", "--limit", "3"]),
                audit_flags.clone(),
            ]
            .concat(),
            &read_env,
        )
        .await;
    table.expect(0);
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert!(lines[0].starts_with("SEQ "), "{}", table.stdout);
    assert_eq!(
        lines.len(),
        5,
        "header, three records, the cursor: {}",
        table.stdout
    );
    assert!(lines[4].starts_with("more: --cursor "), "{}", table.stdout);
    let cursor = page["next_cursor"].as_str().unwrap();
    let next = export(strings(&[
        "--event", "exchange", "--limit", "1", "--pages", "1", "--cursor", cursor,
    ]))
    .await;
    assert_eq!(next.len(), 1);
    assert_eq!(next[0]["seq"], two[1]["seq"]);
    // --out writes the same bundle to a file, and nothing to stdout.
    let out = remote.cwd.path().join("bundle.jsonl");
    let run = remote
        .run(
            &[
                strings(&[
                    "audit",
                    "export",
                    "--client",
                    "apl-cahul",
                    "--event",
                    "exchange",
                    "--out",
                    out.to_str().unwrap(),
                ]),
                audit_flags.clone(),
            ]
            .concat(),
            &read_env,
        )
        .await;
    run.expect(0);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    let written = std::fs::read_to_string(&out).unwrap();
    assert_eq!(written.lines().count(), cahul.len() + 1);

    // prove, with --json, through the same flags.
    let run = remote
        .run(
            &[
                strings(&["audit", "prove", &seqs[0].to_string(), "--json"]),
                audit_flags.clone(),
            ]
            .concat(),
            &read_env,
        )
        .await;
    run.expect(0);
    let proof = run.json();
    assert_eq!(proof["seq"], seqs[0]);
    assert!(proof["tree_head"]["signature"].is_string(), "{proof}");
    // No basis named: a usage error. A basis the grant lacks: refused.
    remote
        .run(
            &[strings(&["audit", "query"]), audit_flags.clone()].concat(),
            &[],
        )
        .await
        .expect(64);
    let run = remote
        .run(
            &[
                strings(&[
                    "audit",
                    "query",
                    "--basis",
                    "no-such-basis",
                    "--reason",
                    &auditor.reason,
                ]),
                audit_flags.clone(),
            ]
            .concat(),
            &[],
        )
        .await;
    run.expect(3);
    // --limit out of range: clap's usage error, exit 64 too.
    remote
        .run(
            &[
                strings(&["audit", "query", "--limit", "0"]),
                audit_flags.clone(),
            ]
            .concat(),
            &read_env,
        )
        .await
        .expect(64);

    bus.stop().await;
}
