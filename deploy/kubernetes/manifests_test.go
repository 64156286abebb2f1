// Package kubernetes holds the example manifests; its test decodes them
// strictly into the official Kubernetes API types, so that a typo in a
// field name fails CI.
package kubernetes

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.uber.org/goleak"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// decodeAll strictly decodes every document of every manifest.
func decodeAll(t *testing.T) map[string][]any {
	t.Helper()
	files, _ := filepath.Glob("*.yaml")
	if len(files) == 0 {
		t.Fatal("no manifests")
	}
	objs := map[string][]any{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range bytes.Split(data, []byte("\n---\n")) {
			var head struct{ APIVersion, Kind string }
			if err := yaml.Unmarshal(doc, &head); err != nil {
				t.Fatalf("%s doc %d: %v", f, i, err)
			}
			var obj any
			switch head.APIVersion + " " + head.Kind {
			case "v1 Pod":
				obj = &corev1.Pod{}
			case "v1 Secret":
				obj = &corev1.Secret{}
			case "v1 Service":
				obj = &corev1.Service{}
			case "v1 PersistentVolumeClaim":
				obj = &corev1.PersistentVolumeClaim{}
			case "apps/v1 Deployment":
				obj = &appsv1.Deployment{}
			default:
				t.Fatalf("%s doc %d: unexpected %s %s", f, i, head.APIVersion, head.Kind)
			}
			if err := yaml.UnmarshalStrict(doc, obj); err != nil {
				t.Fatalf("%s doc %d (%s): %v", f, i, head.Kind, err)
			}
			objs[head.Kind] = append(objs[head.Kind], obj)
		}
	}
	return objs
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
