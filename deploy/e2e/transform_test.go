//go:build engine

package e2e

// The shipped manifests, turned into what podman 4.3's `kube play` can
// run. Only what podman cannot do is changed; anything the transform does
// not know how to map fails the test, naming it.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/porthole-dev/porthole/deploy/kubernetes"
)

// deployDir holds the shipped manifests.
var deployDir = filepath.Join(root, "deploy/kubernetes")

// shipped is the deployment as kustomization.yaml lists it.
type shipped struct {
	files    map[string][]any // file -> its objects, in order
	order    []string         // files in kustomization order
	services []*corev1.Service
	secrets  []*corev1.Secret
	policies []*networkingv1.NetworkPolicy
}

// loadShipped reads kustomization.yaml and strictly decodes each resource
// it lists.
func loadShipped(t *testing.T) *shipped {
	t.Helper()
	var k struct {
		Resources []string `json:"resources"`
	}
	data, err := os.ReadFile(filepath.Join(deployDir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, &k); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	if len(k.Resources) == 0 {
		t.Fatal("kustomization.yaml lists no resources")
	}
	s := &shipped{files: map[string][]any{}}
	for _, f := range k.Resources {
		objs, err := kubernetes.DecodeFile(filepath.Join(deployDir, f))
		if err != nil {
			t.Fatalf("kustomization.yaml lists %s: %v (the engine test maps the kinds deploy/kubernetes.DecodeFile knows; teach both any other)", f, err)
		}
		s.order = append(s.order, f)
		s.files[f] = objs
		for _, obj := range objs {
			switch o := obj.(type) {
			case *corev1.Service:
				s.services = append(s.services, o)
			case *corev1.Secret:
				s.secrets = append(s.secrets, o)
			case *networkingv1.NetworkPolicy:
				s.policies = append(s.policies, o)
			}
		}
	}
	return s
}

// probe is a probe of a shipped container, checked by the test itself:
// podman 4.3 ignores readiness probes and turns liveness probes into
// healthchecks it runs through /bin/sh (or curl), which images FROM
// scratch do not have; a kubelet runs exec probes without a shell and
// httpGet probes from outside the container, as the test does.
type probe struct {
	container string // podman's name: POD-CONTAINER
	kind      string // liveness, readiness
	exec      []string
	url       string // httpGet, resolved to the loopback port
}

// transform is what became of the shipped manifests.
type transform struct {
	probes []probe
	ports  map[string][]int32 // container -> its containerPorts
	images map[string]string  // shipped image -> local image
	notes  []string           // what was changed, for the log
}

// play turns one shipped file into podman's YAML: pods on the host network
// of the engine's namespace, local images, Services' URLs resolved to the
// loopback port behind them, probes and ports taken out (checked by the
// test), init containers with restartPolicy OnFailure, resource limits
// kept when the cgroup controllers exist. Secrets, Services and
// NetworkPolicies are not played (podman 4.3 has none); withPVC false
// leaves out claims whose volume exists (a replay).
func (s *shipped) play(t *testing.T, tr *transform, file string, withPVC bool) string {
	t.Helper()
	var out [][]byte
	for _, obj := range s.files[file] {
		switch o := obj.(type) {
		case *corev1.Pod:
			c := o.DeepCopy()
			tr.podSpec(t, s, c.Name, &c.Spec)
			out = append(out, marshal(t, c))
		case *appsv1.Deployment:
			c := o.DeepCopy()
			if c.Spec.Replicas != nil && *c.Spec.Replicas != 1 {
				t.Fatalf("%s: Deployment %s has %d replicas: the e2e plays one", file, c.Name, *c.Spec.Replicas)
			}
			// podman names the pod of a Deployment NAME-pod-0.
			tr.podSpec(t, s, c.Name+"-pod-0", &c.Spec.Template.Spec)
			out = append(out, marshal(t, c))
		case *corev1.PersistentVolumeClaim:
			if withPVC {
				out = append(out, marshal(t, o))
			}
		case *corev1.Service, *corev1.Secret, *networkingv1.NetworkPolicy:
			// not played: see above
		}
	}
	if len(out) == 0 {
		t.Fatalf("%s: nothing to play", file)
	}
	name := filepath.Join(t.TempDir(), file)
	if err := os.WriteFile(name, bytes.Join(out, []byte("---\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	return name
}

func marshal(t *testing.T, obj any) []byte {
	t.Helper()
	b, err := yaml.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (tr *transform) podSpec(t *testing.T, s *shipped, pod string, spec *corev1.PodSpec) {
	t.Helper()
	spec.HostNetwork = true
	if len(spec.InitContainers) > 0 && (spec.RestartPolicy == "" || spec.RestartPolicy == corev1.RestartPolicyAlways) {
		// podman 4.3 gives init containers the pod's policy: Always would
		// restart the copier forever.
		spec.RestartPolicy = corev1.RestartPolicyOnFailure
	}
	all := []*corev1.Container{}
	for i := range spec.InitContainers {
		all = append(all, &spec.InitContainers[i])
	}
	for i := range spec.Containers {
		all = append(all, &spec.Containers[i])
	}
	for _, c := range all {
		name := pod + "-" + c.Name
		repo, _, _ := strings.Cut(c.Image, "@")
		if i := strings.LastIndex(repo, ":"); i > strings.LastIndex(repo, "/") {
			repo = repo[:i]
		}
		local, ok := tr.images[repo]
		if !ok {
			t.Fatalf("%s: image %s: the engine test has no local image for it (no registry here); map it in deploy/e2e", name, c.Image)
		}
		c.Image = local
		c.ImagePullPolicy = corev1.PullNever
		for _, p := range c.Ports {
			tr.ports[name] = append(tr.ports[name], p.ContainerPort)
		}
		for kind, p := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe, "startup": c.StartupProbe} {
			if p == nil {
				continue
			}
			pr := probe{container: name, kind: kind}
			switch {
			case p.Exec != nil:
				pr.exec = p.Exec.Command
			case p.HTTPGet != nil:
				port := resolvePort(t, name, c.Ports, p.HTTPGet.Port)
				if p.HTTPGet.Host != "" || (p.HTTPGet.Scheme != "" && p.HTTPGet.Scheme != corev1.URISchemeHTTP) {
					t.Fatalf("%s: %s probe with host or scheme: not mapped", name, kind)
				}
				pr.url = fmt.Sprintf("http://127.0.0.1:%d%s", port, p.HTTPGet.Path)
			default:
				t.Fatalf("%s: %s probe of a kind the engine test does not check (exec and httpGet are)", name, kind)
			}
			tr.probes = append(tr.probes, pr)
		}
		c.Ports, c.LivenessProbe, c.ReadinessProbe, c.StartupProbe = nil, nil, nil, nil
		if isDetected("no-memory") && (len(c.Resources.Limits) > 0 || len(c.Resources.Requests) > 0) {
			tr.notes = append(tr.notes, name+": resources not applied (no memory/cpu controller in this machine's cgroup v2 tree)")
			c.Resources = corev1.ResourceRequirements{}
		}
		c.Command = tr.resolveServices(t, s, c.Command)
		c.Args = tr.resolveServices(t, s, c.Args)
	}
}

func resolvePort(t *testing.T, ctr string, ports []corev1.ContainerPort, p intstr.IntOrString) int32 {
	t.Helper()
	if p.Type == intstr.Int {
		return p.IntVal
	}
	for _, cp := range ports {
		if cp.Name == p.StrVal {
			return cp.ContainerPort
		}
	}
	t.Fatalf("%s: no port named %q", ctr, p.StrVal)
	return 0
}

// resolveServices replaces the URLs of the manifests' Services
// (scheme://NAME[.NAMESPACE.svc[.cluster.local]][:PORT]) with the loopback
// port behind them: podman 4.3 has no Services and no cluster DNS.
func (tr *transform) resolveServices(t *testing.T, s *shipped, args []string) []string {
	t.Helper()
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = a
		for _, svc := range s.services {
			for _, sp := range svc.Spec.Ports {
				target := backendPort(t, s, svc, sp.TargetPort)
				for _, host := range []string{svc.Name + ".default.svc.cluster.local", svc.Name + ".default.svc", svc.Name} {
					hp := host
					if sp.Port != 80 {
						hp += ":" + strconv.Itoa(int(sp.Port))
					}
					for _, scheme := range []string{"ws://", "http://"} {
						if strings.HasPrefix(out[i], scheme+hp) {
							rest := strings.TrimPrefix(out[i], scheme+hp)
							if rest == "" || rest[0] == '/' {
								out[i] = fmt.Sprintf("%s127.0.0.1:%d%s", scheme, target, rest)
								tr.notes = append(tr.notes, fmt.Sprintf("%q -> %q (Service %s)", a, out[i], svc.Name))
							}
						}
					}
				}
			}
		}
	}
	return out
}

// podOf returns the pod labels and spec of a Pod or a Deployment's
// template; nil for other kinds.
func podOf(obj any) (map[string]string, *corev1.PodSpec) {
	switch o := obj.(type) {
	case *appsv1.Deployment:
		return o.Spec.Template.Labels, &o.Spec.Template.Spec
	case *corev1.Pod:
		return o.Labels, &o.Spec
	}
	return nil, nil
}

// backendPort is the container port a Service's targetPort names, in the
// pods its selector picks.
func backendPort(t *testing.T, s *shipped, svc *corev1.Service, target intstr.IntOrString) int32 {
	t.Helper()
	for _, objs := range s.files {
		for _, obj := range objs {
			labels, spec := podOf(obj)
			if spec == nil || !selects(svc.Spec.Selector, labels) {
				continue
			}
			for _, c := range spec.Containers {
				for _, p := range c.Ports {
					if (target.Type == intstr.String && p.Name == target.StrVal) || (target.Type == intstr.Int && p.ContainerPort == target.IntVal) {
						return p.ContainerPort
					}
				}
			}
		}
	}
	t.Fatalf("Service %s: no pod of the manifests serves its targetPort %s", svc.Name, target.String())
	return 0
}

func selects(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// createSecrets makes each shipped Secret a podman secret, with the
// values the test chose for its keys: podman 4.3 reads secretKeyRef from
// a podman secret holding a JSON object of base64 values. A key the test
// has no value for fails: the shipped placeholders are not tokens.
func (s *shipped) createSecrets(t *testing.T, values map[string]map[string]string) {
	t.Helper()
	for _, sec := range s.secrets {
		keys := map[string]bool{}
		for k := range sec.StringData {
			keys[k] = true
		}
		for k := range sec.Data {
			keys[k] = true
		}
		obj := map[string][]byte{}
		for k := range keys {
			v, ok := values[sec.Name][k]
			if !ok {
				t.Fatalf("Secret %s key %s: the engine test has no value for it", sec.Name, k)
			}
			obj[k] = []byte(v) // encoding/json writes []byte as base64
		}
		js, err := json.Marshal(obj)
		if err != nil {
			t.Fatal(err)
		}
		pmStdin(t, string(js), "secret", "create", sec.Name, "-")
	}
}
