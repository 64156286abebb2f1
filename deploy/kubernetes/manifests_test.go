package kubernetes

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.uber.org/goleak"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/yaml"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// decodeAll strictly decodes every document of every manifest, by kind.
func decodeAll(t *testing.T) map[string][]any {
	t.Helper()
	files, _ := filepath.Glob("*.yaml")
	files = slices.DeleteFunc(files, func(f string) bool { return f == "kustomization.yaml" })
	if len(files) == 0 {
		t.Fatal("no manifests")
	}
	objs := map[string][]any{}
	for _, f := range files {
		list, err := DecodeFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, obj := range list {
			objs[KindOf(obj)] = append(objs[KindOf(obj)], obj)
		}
	}
	return objs
}

func TestDecodeFileRefuses(t *testing.T) {
	for _, tc := range []struct{ name, doc, want string }{
		{"unknown kind", "apiVersion: v1\nkind: ConfigMap\n", "unexpected v1 ConfigMap"},
		{"unknown field", "apiVersion: v1\nkind: Service\nspec:\n  selectr: {}\n", "selectr"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := filepath.Join(t.TempDir(), "x.yaml")
			os.WriteFile(f, []byte(tc.doc), 0o644)
			if _, err := DecodeFile(f); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("DecodeFile: %v, want an error naming %q", err, tc.want)
			}
		})
	}
}

func TestStrictDecodingCatchesTypos(t *testing.T) {
	bad := []byte("apiVersion: v1\nkind: Pod\nspec:\n  containers:\n    - name: x\n      imagePullPolcy: Always\n")
	if err := yaml.UnmarshalStrict(bad, &corev1.Pod{}); err == nil || !strings.Contains(err.Error(), "imagePullPolcy") {
		t.Fatalf("a misspelt field decoded without error: %v", err)
	}
}

func TestInjectionPod(t *testing.T) {
	objs := decodeAll(t)
	if len(objs["Pod"]) != 1 {
		t.Fatalf("want one Pod, got %d", len(objs["Pod"]))
	}
	pod := objs["Pod"][0].(*corev1.Pod)
	if len(pod.Spec.Volumes) != 1 || pod.Spec.Volumes[0].EmptyDir == nil {
		t.Fatal("the shared volume must be an emptyDir")
	}
	vol := pod.Spec.Volumes[0].Name
	if len(pod.Spec.InitContainers) != 1 {
		t.Fatal("want one init container (the copier)")
	}
	ic := pod.Spec.InitContainers[0]
	if !slices.ContainsFunc(ic.Env, func(e corev1.EnvVar) bool { return e.Name == "PORTHOLE_INJECT_DIR" && e.Value == "/porthole/bin" }) {
		t.Fatal("the copier must be told where to copy (PORTHOLE_INJECT_DIR)")
	}
	if len(ic.VolumeMounts) != 1 || ic.VolumeMounts[0].Name != vol || ic.VolumeMounts[0].ReadOnly {
		t.Fatal("the copier must mount the shared volume writable")
	}
	chained := 0
	for _, c := range pod.Spec.Containers {
		if len(c.Command) < 2 || c.Command[0] != "/porthole/bin/porthole" || c.Command[1] != "entrypoint" {
			t.Fatalf("container %s: command %q does not run porthole entrypoint", c.Name, c.Command)
		}
		if i := slices.Index(c.Command, "--"); i > 0 && i < len(c.Command)-1 {
			chained++
		}
		if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool {
			return e.Name == "PORTHOLE_TOKEN" && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil
		}) {
			t.Fatalf("container %s: PORTHOLE_TOKEN must come from a Secret", c.Name)
		}
		if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/healthz" {
			t.Fatalf("container %s: readiness probe must be GET /healthz", c.Name)
		}
		if !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == vol && m.MountPath == "/porthole/bin" }) {
			t.Fatalf("container %s: must mount the shared volume at /porthole/bin", c.Name)
		}
	}
	if len(pod.Spec.Containers) != 2 || chained != 1 {
		t.Fatalf("want two sidecars, one chaining its own entrypoint; got %d containers, %d chained", len(pod.Spec.Containers), chained)
	}
}

func TestMasterDeployment(t *testing.T) {
	objs := decodeAll(t)
	if len(objs["Deployment"]) != 1 || len(objs["Service"]) != 1 {
		t.Fatal("want one Deployment and one Service for porthole-master")
	}
	d := objs["Deployment"][0].(*appsv1.Deployment)
	s := objs["Service"][0].(*corev1.Service)
	for k, v := range s.Spec.Selector {
		if d.Spec.Template.Labels[k] != v {
			t.Fatalf("service selector %s=%s does not match the pod template", k, v)
		}
	}
	args := d.Spec.Template.Spec.Containers[0].Args
	if !slices.Contains(args, "-listen") || !slices.Contains(args, "-data") {
		t.Fatalf("master args %q lack -listen or -data", args)
	}
}

// TestKustomization: kustomization.yaml lists every manifest (make
// e2e-engine plays what it lists) and lets users set both images.
func TestKustomization(t *testing.T) {
	data, err := os.ReadFile("kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Namespace  string `json:"namespace"`
		Resources  []string
		Images     []struct {
			Name, NewName, NewTag string
		}
	}
	if err := yaml.UnmarshalStrict(data, &k); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	files, _ := filepath.Glob("*.yaml")
	for _, f := range files {
		if f != "kustomization.yaml" && !slices.Contains(k.Resources, f) {
			t.Errorf("kustomization.yaml does not list %s", f)
		}
	}
	for _, r := range k.Resources {
		if _, err := os.Stat(r); err != nil {
			t.Errorf("kustomization.yaml lists %s: %v", r, err)
		}
	}
	images := map[string]bool{}
	for _, objs := range decodeAll(t) {
		for _, obj := range objs {
			for _, c := range containersOf(obj) {
				name, _, _ := strings.Cut(c.Image, ":")
				images[name] = true
			}
		}
	}
	for _, want := range []string{"ghcr.io/porthole-dev/porthole-copier", "ghcr.io/porthole-dev/porthole-master"} {
		if !images[want] {
			t.Errorf("no manifest uses %s", want)
		}
		if !slices.ContainsFunc(k.Images, func(i struct{ Name, NewName, NewTag string }) bool { return i.Name == want }) {
			t.Errorf("kustomization.yaml does not let users set %s", want)
		}
	}
}

// containersOf returns the init and app containers of a Pod or a
// Deployment's template, with its pod-level security context.
func containersOf(obj any) []corev1.Container {
	var spec *corev1.PodSpec
	switch o := obj.(type) {
	case *corev1.Pod:
		spec = &o.Spec
	case *appsv1.Deployment:
		spec = &o.Spec.Template.Spec
	default:
		return nil
	}
	return append(slices.Clone(spec.InitContainers), spec.Containers...)
}

// TestHardening: the copier and the master run non-root, with a read-only
// root filesystem and no capabilities; every container has resources and
// probes that need nothing but porthole in the image (no curl, no shell).
func TestHardening(t *testing.T) {
	objs := decodeAll(t)
	seen := 0
	for _, list := range objs {
		for _, obj := range list {
			var podSC *corev1.PodSecurityContext
			switch o := obj.(type) {
			case *corev1.Pod:
				podSC = o.Spec.SecurityContext
			case *appsv1.Deployment:
				podSC = o.Spec.Template.Spec.SecurityContext
			}
			for _, c := range containersOf(obj) {
				seen++
				if c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
					t.Errorf("container %s: set memory requests and limits", c.Name)
				}
				sc := c.SecurityContext
				if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
					t.Errorf("container %s: allowPrivilegeEscalation must be false", c.Name)
				}
				if strings.Contains(c.Image, "porthole-copier") || strings.Contains(c.Image, "porthole-master") {
					nonRoot := (sc != nil && sc.RunAsNonRoot != nil && *sc.RunAsNonRoot) || (podSC != nil && podSC.RunAsNonRoot != nil && *podSC.RunAsNonRoot)
					if !nonRoot {
						t.Errorf("container %s: must run as non-root", c.Name)
					}
					if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
						t.Errorf("container %s: readOnlyRootFilesystem must be true", c.Name)
					}
					if sc == nil || sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
						t.Errorf("container %s: must drop ALL capabilities and add none", c.Name)
					}
				}
				if strings.Contains(c.Image, "porthole-copier") {
					continue // an init container: no probes
				}
				if c.LivenessProbe == nil || c.ReadinessProbe == nil {
					t.Errorf("container %s: needs liveness and readiness probes", c.Name)
					continue
				}
				for _, p := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe} {
					if p.Exec != nil {
						cmd := p.Exec.Command
						if len(cmd) < 2 || !strings.HasSuffix(cmd[0], "porthole") || cmd[1] != "health" {
							t.Errorf("container %s: exec probe %q must be `porthole health` (no curl or shell in the images)", c.Name, cmd)
						}
					} else if p.HTTPGet == nil {
						t.Errorf("container %s: probes are httpGet (by the kubelet) or `porthole health`", c.Name)
					}
				}
			}
		}
	}
	if seen < 4 {
		t.Fatalf("checked %d containers: want the copier, two sidecars and the master", seen)
	}
}

// TestNetworkPolicy: only the master's pods reach the agents' ports.
func TestNetworkPolicy(t *testing.T) {
	objs := decodeAll(t)
	if len(objs["NetworkPolicy"]) != 1 {
		t.Fatalf("want one NetworkPolicy, got %d", len(objs["NetworkPolicy"]))
	}
	np := objs["NetworkPolicy"][0].(*networkingv1.NetworkPolicy)
	pod := objs["Pod"][0].(*corev1.Pod)
	master := objs["Deployment"][0].(*appsv1.Deployment)
	for k, v := range np.Spec.PodSelector.MatchLabels {
		if pod.Labels[k] != v {
			t.Errorf("podSelector %s=%s does not select the injected pod", k, v)
		}
	}
	if len(np.Spec.Ingress) != 1 || len(np.Spec.Ingress[0].From) != 1 || np.Spec.Ingress[0].From[0].PodSelector == nil {
		t.Fatalf("want one ingress rule from one podSelector: %+v", np.Spec.Ingress)
	}
	for k, v := range np.Spec.Ingress[0].From[0].PodSelector.MatchLabels {
		if master.Spec.Template.Labels[k] != v {
			t.Errorf("the ingress podSelector %s=%s does not select the master", k, v)
		}
	}
	var allowed []int32
	for _, p := range np.Spec.Ingress[0].Ports {
		allowed = append(allowed, p.Port.IntVal)
	}
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			if p.Name == "porthole" && !slices.Contains(allowed, p.ContainerPort) {
				t.Errorf("container %s: agent port %d is not allowed by the NetworkPolicy (%v)", c.Name, p.ContainerPort, allowed)
			}
		}
	}
}
