// Package kubernetes holds the example manifests. DecodeFile reads them
// strictly into the official Kubernetes API types, so that a typo in a
// field name fails CI; its tests check what the manifests must hold, and
// deploy/e2e plays them in a real engine.
package kubernetes

import (
	"bytes"
	"fmt"
	"os"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/yaml"
)

// DecodeFile strictly decodes every document of a manifest file (split at
// "\n---\n") into the API type of its kind: *corev1.Pod, Secret, Service,
// PersistentVolumeClaim, *appsv1.Deployment or
// *networkingv1.NetworkPolicy. Another kind, or an unknown field, is an
// error naming the document.
func DecodeFile(path string) ([]any, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var objs []any
	for i, doc := range bytes.Split(data, []byte("\n---\n")) {
		var head struct{ APIVersion, Kind string }
		if err := yaml.Unmarshal(doc, &head); err != nil {
			return nil, fmt.Errorf("%s doc %d: %w", path, i, err)
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
		case "networking.k8s.io/v1 NetworkPolicy":
			obj = &networkingv1.NetworkPolicy{}
		default:
			return nil, fmt.Errorf("%s doc %d: unexpected %s %s", path, i, head.APIVersion, head.Kind)
		}
		if err := yaml.UnmarshalStrict(doc, obj); err != nil {
			return nil, fmt.Errorf("%s doc %d (%s): %w", path, i, head.Kind, err)
		}
		objs = append(objs, obj)
	}
	return objs, nil
}

// KindOf is the kind of an object DecodeFile returned.
func KindOf(obj any) string {
	switch obj.(type) {
	case *corev1.Pod:
		return "Pod"
	case *corev1.Secret:
		return "Secret"
	case *corev1.Service:
		return "Service"
	case *corev1.PersistentVolumeClaim:
		return "PersistentVolumeClaim"
	case *appsv1.Deployment:
		return "Deployment"
	case *networkingv1.NetworkPolicy:
		return "NetworkPolicy"
	}
	return ""
}
