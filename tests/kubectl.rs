//! kubectl against `keel apiserver`: the everyday workflow (apply client- and server-side,
//! get in every output form, selectors, describe, create from literals, edit, patch of
//! every type, scale, delete with waiting, namespaces, watch, errors), run over Keel's
//! store and over a real etcd; the transcripts must match each other and what kubectl
//! prints against Kubernetes.

use std::process::Output;
use std::time::Duration;

use crate::harness::kube::ApiServer;
use crate::harness::{wait_for, Flavor, Member};

const MANIFEST: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: nginx
        image: nginx:1.25
        ports:
        - containerPort: 80
---
apiVersion: v1
kind: Service
metadata:
  name: web
  labels: {app: web}
spec:
  type: NodePort
  selector: {app: web}
  ports:
  - port: 80
    targetPort: 80
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: cfg
  labels: {app: web}
data:
  greeting: hello
"#;

/// Replaces what differs between runs (ages, IPs, node ports, uids, resourceVersions,
/// timestamps, temp paths) with placeholders, and column padding with single spaces.
fn normalize(s: &str) -> String {
    static RULES: std::sync::LazyLock<Vec<(regex::Regex, &'static str)>> = std::sync::LazyLock::new(|| {
        [
            (r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<uid>"),
            (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", "<time>"),
            (r"[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d \+0000", "<time>"),
            (r#"(resourceVersion"?:\s*"?)\d+"#, "${1}<rv>"),
            (r"\b10\.\d+\.\d+\.\d+\b", "<ip>"),
            (r"(nodePort:\s*|80:)3\d{4}", "${1}<nodeport>"),
            (r"(^|\s)\d+[smhd](\d+[smh])?(\s|$)", "${1}<age>${3}"),
            (r"/tmp/\S+/", "<dir>/"),
            (r"[ \t]+", " "),
        ]
        .into_iter()
        .map(|(re, to)| (regex::Regex::new(re).expect("valid pattern"), to))
        .collect()
    });
    s.lines()
        .map(|line| RULES.iter().fold(line.to_string(), |l, (re, to)| re.replace_all(&l, *to).into_owned()))
        .map(|l| l.trim().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

struct Transcript {
    text: String,
}

impl Transcript {
    fn record(&mut self, args: &[&str], o: &Output) -> String {
        let stdout = String::from_utf8_lossy(&o.stdout).to_string();
        let stderr = String::from_utf8_lossy(&o.stderr).to_string();
        self.text.push_str(&format!(
            "$ kubectl {}\n{}\n{}[exit {}]\n",
            normalize(&args.join(" ")),
            normalize(&stdout),
            normalize(&stderr),
            o.status.code().unwrap_or(-1)
        ));
        stdout
    }
}

fn ok(api: &ApiServer, t: &mut Transcript, args: &[&str]) -> String {
    let o = api.kubectl(args);
    assert!(o.status.success(), "kubectl {args:?} failed: {}\n{}", String::from_utf8_lossy(&o.stderr), api.log());
    t.record(args, &o)
}

fn fails(api: &ApiServer, t: &mut Transcript, args: &[&str]) -> String {
    let o = api.kubectl(args);
    assert!(!o.status.success(), "kubectl {args:?} should have failed");
    t.record(args, &o);
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn workflow(api: &ApiServer) -> String {
    let mut t = Transcript { text: String::new() };
    let dir = api.dir();
    let manifest = dir.join("web.yaml");
    let m = manifest.display().to_string();
    std::fs::write(&manifest, MANIFEST).expect("manifest");

    let out = ok(api, &mut t, &["apply", "-f", &m]);
    assert_eq!(out, "deployment.apps/web created\nservice/web created\nconfigmap/cfg created\n");
    let out = ok(api, &mut t, &["get", "deploy,svc,cm"]);
    assert!(out.contains("deployment.apps/web   0/2     0            0"), "{out}");
    assert!(out.contains("service/web   NodePort"), "{out}");
    ok(api, &mut t, &["get", "deploy", "web", "-o", "wide"]);
    ok(api, &mut t, &["get", "svc", "web", "-o", "yaml"]);

    std::fs::write(&manifest, MANIFEST.replace("replicas: 2", "replicas: 3")).expect("manifest");
    let out = ok(api, &mut t, &["apply", "-f", &m]);
    assert_eq!(out, "deployment.apps/web configured\nservice/web unchanged\nconfigmap/cfg unchanged\n");
    let out = ok(api, &mut t, &["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}/{.metadata.generation}"]);
    assert_eq!(out, "3/2");

    let applied = MANIFEST.replace("replicas: 2", "replicas: 3").replace("greeting: hello", "greeting: hi");
    std::fs::write(&manifest, applied).expect("manifest");
    // The client-side applier owns greeting=hello: a server-side apply of another value conflicts.
    let err = fails(api, &mut t, &["apply", "--server-side", "-f", &m]);
    assert!(
        err.contains(
            "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using v1: .data.greeting"
        ),
        "{err}"
    );
    let out = ok(api, &mut t, &["apply", "--server-side", "--force-conflicts", "-f", &m]);
    assert!(out.contains("configmap/cfg serverside-applied"), "{out}");
    let out = ok(api, &mut t, &["get", "cm", "cfg", "-o", "jsonpath={.data.greeting}"]);
    assert_eq!(out, "hi");
    let out = ok(
        api,
        &mut t,
        &["get", "cm", "cfg", "--show-managed-fields", "-o", "jsonpath={.metadata.managedFields[*].manager}"],
    );
    assert_eq!(out, "kubectl-client-side-apply kubectl-last-applied kubectl");

    ok(api, &mut t, &["create", "configmap", "lit", "--from-literal=a=1", "--from-literal=b=2"]);
    ok(api, &mut t, &["create", "secret", "generic", "sec", "--from-literal=password=hunter2"]);
    let out = ok(api, &mut t, &["get", "secret", "sec", "-o", "jsonpath={.data.password}"]);
    assert_eq!(out, "aHVudGVyMg==");
    let out = ok(api, &mut t, &["get", "cm", "-l", "app=web", "-o", "name"]);
    assert_eq!(out, "configmap/cfg\n");
    let out = ok(api, &mut t, &["get", "cm", "--field-selector", "metadata.name=lit", "-o", "name"]);
    assert_eq!(out, "configmap/lit\n");
    let out = ok(api, &mut t, &["get", "cm", "-A"]);
    assert!(out.starts_with("NAMESPACE"), "{out}");
    ok(api, &mut t, &["get", "cm", "lit", "-o", "json"]);
    // kubectl prints a ConfigMap's data in Go map order: checked, not compared.
    let out = String::from_utf8_lossy(&api.kubectl(&["describe", "cm", "lit"]).stdout).to_string();
    assert!(out.contains("Name:         lit") && out.contains("a:\n----\n1\n"), "{out}");
    ok(api, &mut t, &["describe", "deploy", "web"]);

    let editor = dir.join("editor.sh");
    std::fs::write(&editor, "#!/bin/sh\nsed -i 's/^  b: \"2\"$/  b: edited/' \"$1\"\n").expect("editor");
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let edit = api.command(&["edit", "cm", "lit"]).env("KUBE_EDITOR", &editor).output().expect("kubectl edit");
    t.record(&["edit", "cm", "lit"], &edit);
    let out = ok(api, &mut t, &["get", "cm", "lit", "-o", "jsonpath={.data.b}"]);
    assert_eq!(out, "edited", "{}", String::from_utf8_lossy(&edit.stderr));

    let smp = r#"{"spec":{"template":{"spec":{"containers":[{"name":"nginx","image":"nginx:1.26"}]}}}}"#;
    ok(api, &mut t, &["patch", "deploy", "web", "-p", smp]);
    ok(api, &mut t, &["patch", "cm", "lit", "--type=merge", "-p", r#"{"data":{"c":"3"}}"#]);
    let json_patch = r#"[{"op":"add","path":"/metadata/labels/patched","value":"yes"}]"#;
    ok(api, &mut t, &["patch", "svc", "web", "--type=json", "-p", json_patch]);
    let out = ok(
        api,
        &mut t,
        &["get", "deploy", "web", "-o", "jsonpath={.spec.template.spec.containers[0].image}/{.metadata.generation}"],
    );
    assert_eq!(out, "nginx:1.26/3");
    let out = ok(api, &mut t, &["get", "svc", "web", "-o", "jsonpath={.metadata.labels.patched}"]);
    assert_eq!(out, "yes");
    ok(api, &mut t, &["scale", "deploy", "web", "--replicas=5"]);
    let out = ok(api, &mut t, &["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]);
    assert_eq!(out, "5");

    let err = fails(api, &mut t, &["get", "cm", "nope"]);
    assert_eq!(err, "Error from server (NotFound): configmaps \"nope\" not found\n");
    let err = fails(api, &mut t, &["create", "configmap", "lit"]);
    assert_eq!(err, "error: failed to create configmap: configmaps \"lit\" already exists\n");
    let err = fails(api, &mut t, &["create", "configmap", "Bad_Name"]);
    assert!(err.contains("is invalid: metadata.name: Invalid value: \"Bad_Name\""), "{err}");
    let err = fails(api, &mut t, &["create", "configmap", "x", "-n", "no-such-namespace"]);
    assert!(err.contains("namespaces \"no-such-namespace\" not found"), "{err}");

    let out = ok(api, &mut t, &["delete", "cm", "lit"]);
    assert_eq!(out, "configmap \"lit\" deleted\n");
    fails(api, &mut t, &["get", "cm", "lit"]);
    let out = ok(api, &mut t, &["api-resources", "--api-group=apps", "-o", "name"]);
    assert_eq!(out, "deployments.apps\nreplicasets.apps\nstatefulsets.apps\n");

    let out = ok(api, &mut t, &["explain", "deployment.spec.replicas"]);
    assert!(out.contains("FIELD: replicas <integer>") && out.contains("Number of desired pods"), "{out}");

    ok(api, &mut t, &["create", "namespace", "other"]);
    ok(api, &mut t, &["create", "configmap", "inside", "-n", "other"]);
    ok(api, &mut t, &["delete", "namespace", "other"]);
    fails(api, &mut t, &["get", "namespace", "other"]);
    let out = ok(api, &mut t, &["delete", "-f", &m]);
    assert!(out.contains("deployment.apps \"web\" deleted"), "{out}");
    t.text
}

#[test]
fn kubectl_workflow_on_keel_matches_etcd() {
    let mut transcripts = Vec::new();
    for flavor in [Flavor::Keel, Flavor::Etcd] {
        let store = Member::single(flavor);
        let api = ApiServer::start(&store.client_url(), &[]);
        transcripts.push(workflow(&api));
    }
    assert_eq!(transcripts[0], transcripts[1], "kubectl over Keel's store (left) and etcd (right) differ");
}

#[test]
fn kubectl_get_watch_sees_every_change() {
    let store = Member::single(Flavor::Keel);
    let api = ApiServer::start(&store.client_url(), &[]);
    let out_path = api.dir().join("watch.out");
    let out = std::fs::File::create(&out_path).expect("watch output");
    let mut watch =
        api.command(&["get", "configmaps", "-w", "--output-watch-events"]).stdout(out).spawn().expect("kubectl get -w");
    let read = || normalize(&std::fs::read_to_string(&out_path).unwrap_or_default());
    assert!(api.kubectl(&["create", "configmap", "before", "--from-literal=a=1"]).status.success());
    wait_for("the header", Duration::from_secs(20), || read().starts_with("EVENT NAME DATA AGE").then_some(()));
    assert!(api.kubectl(&["create", "configmap", "w1", "--from-literal=a=1"]).status.success());
    assert!(api.kubectl(&["patch", "cm", "w1", "-p", r#"{"data":{"b":"2"}}"#]).status.success());
    assert!(api.kubectl(&["delete", "cm", "w1"]).status.success());
    wait_for("the DELETED event", Duration::from_secs(20), || read().contains("DELETED w1").then_some(()));
    let _ = watch.kill();
    let _ = watch.wait();
    assert_eq!(
        read(),
        "EVENT NAME DATA AGE\nADDED before 1 <age>\nADDED w1 1 <age>\nMODIFIED w1 2 <age>\nDELETED w1 2 <age>"
    );
}

#[test]
fn https_and_a_token_file_admit_only_known_tokens() {
    let store = Member::single(Flavor::Keel);
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = crate::harness::self_signed_cert(dir.path(), "cert", "keel-apiserver");
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, "s3cret,alice,1,\"system:masters\"\n").expect("token file");
    let flags = [
        format!("--token-auth-file={}", tokens.display()),
        format!("--tls-cert-file={}", cert.display()),
        format!("--tls-private-key-file={}", key.display()),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let api = ApiServer::start_as(&store.client_url(), &flags, Some("s3cret"), Some(&cert));
    assert!(api.kubectl(&["create", "configmap", "c"]).status.success(), "{}", api.log());
    let o = api.kubectl(&["--token=wrong", "get", "configmaps"]);
    assert!(!o.status.success());
    assert_eq!(String::from_utf8_lossy(&o.stderr), "error: You must be logged in to the server (Unauthorized)\n");
    let o = api.kubectl(&["--token=wrong", "get", "--raw", "/readyz"]);
    assert!(o.status.success(), "health stays open");
}

/// One object of every served type, for the patch test.
const EVERY_TYPE: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: patched}
---
apiVersion: v1
kind: Node
metadata: {name: node-p}
---
apiVersion: v1
kind: Pod
metadata: {name: pod-p}
spec:
  containers:
  - {name: app, image: "busybox:1.36"}
---
apiVersion: v1
kind: Service
metadata: {name: svc-p}
spec:
  selector: {app: p}
  ports:
  - {name: http, port: 80}
---
apiVersion: v1
kind: Endpoints
metadata: {name: ep-p}
subsets:
- addresses: [{ip: 10.1.0.5}]
  ports: [{port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: eps-p}
addressType: IPv4
endpoints:
- addresses: [10.1.0.5]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cm-p}
data: {a: "1"}
---
apiVersion: v1
kind: Secret
metadata: {name: secret-p}
stringData: {a: "1"}
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: pv-p}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  hostPath: {path: /tmp/pv-p}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: pvc-p}
spec:
  accessModes: [ReadWriteOnce]
  resources:
    requests: {storage: 1Gi}
---
apiVersion: v1
kind: Event
metadata: {name: ev-p}
involvedObject: {kind: Pod, name: pod-p, namespace: default}
reason: Testing
message: first
type: Normal
---
apiVersion: coordination.k8s.io/v1
kind: Lease
metadata: {name: lease-p}
spec: {holderIdentity: a, leaseDurationSeconds: 15}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: deploy-p}
spec:
  replicas: 1
  selector: {matchLabels: {app: dp}}
  template:
    metadata: {labels: {app: dp}}
    spec:
      containers: [{name: app, image: "busybox:1.36"}]
---
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: rs-p}
spec:
  replicas: 1
  selector: {matchLabels: {app: rp}}
  template:
    metadata: {labels: {app: rp}}
    spec:
      containers: [{name: app, image: "busybox:1.36"}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: sts-p}
spec:
  replicas: 1
  serviceName: svc-p
  selector: {matchLabels: {app: sp}}
  template:
    metadata: {labels: {app: sp}}
    spec:
      containers: [{name: app, image: "busybox:1.36"}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: ing-p}
spec:
  defaultBackend:
    service: {name: svc-p, port: {number: 80}}
"#;

/// kubectl patch of every type: a strategic merge patch that changes something of the
/// type's own (merging lists by their keys where the type has them), then a merge patch
/// and a JSON patch of the metadata; what kubectl reads back is checked and compared.
fn patch_every_type(api: &ApiServer) -> String {
    let mut t = Transcript { text: String::new() };
    let manifest = api.dir().join("every.yaml");
    std::fs::write(&manifest, EVERY_TYPE).expect("manifest");
    ok(api, &mut t, &["apply", "-f", &manifest.display().to_string()]);
    let cases: [(&str, &str, &str, &str, &str); 16] = [
        ("namespace", "patched", r#"{"metadata":{"labels":{"team":"a"}}}"#, "{.metadata.labels.team}", "a"),
        ("node", "node-p", r#"{"spec":{"unschedulable":true}}"#, "{.spec.unschedulable}", "true"),
        (
            "pod",
            "pod-p",
            r#"{"spec":{"containers":[{"name":"app","image":"busybox:1.37"}]}}"#,
            "{.spec.containers[*].image}",
            "busybox:1.37",
        ),
        ("service", "svc-p", r#"{"spec":{"ports":[{"name":"https","port":443}]}}"#, "{.spec.ports[*].port}", "443 80"),
        (
            "endpoints",
            "ep-p",
            r#"{"subsets":[{"addresses":[{"ip":"10.1.0.6"}],"ports":[{"port":80}]}]}"#,
            "{.subsets[0].addresses[*].ip}",
            "10.1.0.6",
        ),
        (
            "endpointslice",
            "eps-p",
            r#"{"endpoints":[{"addresses":["10.1.0.7"]}]}"#,
            "{.endpoints[*].addresses[0]}",
            "10.1.0.7",
        ),
        ("configmap", "cm-p", r#"{"data":{"b":"2"}}"#, "{.data.a}{.data.b}", "12"),
        ("secret", "secret-p", r#"{"stringData":{"b":"2"}}"#, "{.data.a}/{.data.b}", "MQ==/Mg=="),
        ("pv", "pv-p", r#"{"spec":{"capacity":{"storage":"2Gi"}}}"#, "{.spec.capacity.storage}", "2Gi"),
        ("pvc", "pvc-p", r#"{"metadata":{"annotations":{"note":"x"}}}"#, "{.metadata.annotations.note}", "x"),
        ("event", "ev-p", r#"{"message":"second","count":2}"#, "{.message}/{.count}", "second/2"),
        ("lease", "lease-p", r#"{"spec":{"holderIdentity":"b"}}"#, "{.spec.holderIdentity}", "b"),
        ("deployment", "deploy-p", r#"{"spec":{"replicas":3}}"#, "{.spec.replicas}/{.metadata.generation}", "3/2"),
        ("replicaset", "rs-p", r#"{"spec":{"replicas":2}}"#, "{.spec.replicas}", "2"),
        (
            "statefulset",
            "sts-p",
            r#"{"spec":{"template":{"spec":{"containers":[{"name":"app","image":"busybox:1.37"}]}}}}"#,
            "{.spec.template.spec.containers[0].image}",
            "busybox:1.37",
        ),
        ("ingress", "ing-p", r#"{"spec":{"ingressClassName":"nginx"}}"#, "{.spec.ingressClassName}", "nginx"),
    ];
    for (kind, name, smp, path, want) in cases {
        ok(api, &mut t, &["patch", kind, name, "-p", smp]);
        ok(api, &mut t, &["patch", kind, name, "--type=merge", "-p", r#"{"metadata":{"labels":{"merge":"1"}}}"#]);
        let json = r#"[{"op":"add","path":"/metadata/labels/json","value":"1"}]"#;
        ok(api, &mut t, &["patch", kind, name, "--type=json", "-p", json]);
        let got = ok(api, &mut t, &["get", kind, name, "-o", &format!("jsonpath={path}")]);
        assert_eq!(got, want, "{kind}/{name} after a strategic merge patch");
        let labels =
            ok(api, &mut t, &["get", kind, name, "-o", "jsonpath={.metadata.labels.merge}{.metadata.labels.json}"]);
        assert_eq!(labels, "11", "{kind}/{name} after merge and JSON patches");
    }
    // A patch that breaks a rule of the type is refused as kube-apiserver refuses it.
    let err = fails(
        api,
        &mut t,
        &["patch", "deployment", "deploy-p", "-p", r#"{"spec":{"selector":{"matchLabels":{"app":"other"}}}}"#],
    );
    assert!(err.contains("field is immutable"), "{err}");
    let err = fails(
        api,
        &mut t,
        &[
            "patch",
            "service",
            "svc-p",
            "--type=json",
            "-p",
            r#"[{"op":"replace","path":"/spec/clusterIP","value":"10.96.0.99"}]"#,
        ],
    );
    let want = r#"spec.clusterIPs[0]: Invalid value: []string{"10.96.0.99"}: may not change once set"#;
    assert!(err.contains(want), "{err}");
    t.text
}

#[test]
fn kubectl_patches_every_type_on_keel_and_etcd() {
    let mut transcripts = Vec::new();
    for flavor in [Flavor::Keel, Flavor::Etcd] {
        let store = Member::single(flavor);
        let api = ApiServer::start(&store.client_url(), &[]);
        transcripts.push(patch_every_type(&api));
    }
    assert_eq!(transcripts[0], transcripts[1], "kubectl over Keel's store (left) and etcd (right) differ");
}

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let o = std::process::Command::new("openssl").current_dir(dir).args(args).output().expect("openssl");
    assert!(o.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn client_certificates_signed_by_the_client_ca_authenticate() {
    let store = Member::single(Flavor::Keel);
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    let req = ["req", "-newkey", "rsa:2048", "-nodes", "-days", "1"];
    // The serving certificate, a client CA, a client certificate it signs, and one it does not.
    openssl(
        d,
        &[
            &req[..],
            &["-x509", "-subj", "/CN=keel-apiserver", "-addext", "subjectAltName=IP:127.0.0.1"],
            &["-keyout", "server.key", "-out", "server.pem"],
        ]
        .concat(),
    );
    openssl(d, &[&req[..], &["-x509", "-subj", "/CN=keel-client-ca", "-keyout", "ca.key", "-out", "ca.pem"]].concat());
    std::fs::write(d.join("client.ext"), "extendedKeyUsage=clientAuth\n").expect("ext file");
    openssl(
        d,
        &[&req[..], &["-subj", "/CN=alice/O=system:masters", "-keyout", "alice.key", "-out", "alice.csr"]].concat(),
    );
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "alice.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "client.ext",
            "-out",
            "alice.pem",
        ],
    );
    openssl(
        d,
        &[
            &req[..],
            &[
                "-x509",
                "-subj",
                "/CN=mallory",
                "-addext",
                "extendedKeyUsage=clientAuth",
                "-keyout",
                "mallory.key",
                "-out",
                "mallory.pem",
            ],
        ]
        .concat(),
    );

    let flags = [
        format!("--tls-cert-file={}", d.join("server.pem").display()),
        format!("--tls-private-key-file={}", d.join("server.key").display()),
        format!("--client-ca-file={}", d.join("ca.pem").display()),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    // kubectl's user is alice, by certificate (the harness waits for it to be served).
    let alice = format!(
        "{{client-certificate: \"{}\", client-key: \"{}\"}}",
        d.join("alice.pem").display(),
        d.join("alice.key").display()
    );
    let api = ApiServer::start_with_user(&store.client_url(), &flags, &alice, Some(&d.join("server.pem")));
    let o = api.kubectl(&["create", "configmap", "by-cert"]);
    assert!(o.status.success(), "{}\n{}", String::from_utf8_lossy(&o.stderr), api.log());
    let as_user = |who: &str, args: &[&str]| {
        let cert = format!("--client-certificate={}", d.join(format!("{who}.pem")).display());
        let key = format!("--client-key={}", d.join(format!("{who}.key")).display());
        api.kubectl(&[&[cert.as_str(), key.as_str()][..], args].concat())
    };
    // Without a certificate, and with a token nobody issued: 401 (without any credentials
    // kubectl would prompt for a username instead).
    let anon = d.join("anonymous.kubeconfig");
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: k\n  cluster: {{server: \"https://127.0.0.1:{}\", certificate-authority: \"{}\"}}\ncontexts:\n- name: k\n  context: {{cluster: k, user: u}}\ncurrent-context: k\nusers:\n- name: u\n  user: {{}}\n",
        api.port,
        d.join("server.pem").display()
    );
    std::fs::write(&anon, kubeconfig).expect("kubeconfig");
    let o = api.command(&["--token=unknown", "get", "configmaps"]).env("KUBECONFIG", &anon).output().expect("kubectl");
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("Unauthorized"), "{}", String::from_utf8_lossy(&o.stderr));
    // A certificate from another authority does not get through the handshake.
    let o = as_user("mallory", &["get", "configmaps"]);
    assert!(!o.status.success(), "a certificate the client CA did not sign was accepted");
}
