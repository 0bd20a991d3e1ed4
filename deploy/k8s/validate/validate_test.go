// validate_test.go: renders every kustomization under deploy/k8s with
// kustomize's Go API, strictly decodes each object into its typed Kubernetes
// struct (unknown fields and unknown kinds fail) and checks the invariants
// the server depends on.

package validate

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

const (
	opsPort    = 4500
	rtspPort   = 8554
	configDir  = "/etc/icey-server"
	configPath = configDir + "/config.json"
)

// envNames are the environment variables the manifests may set: the
// server's (config/load.go) and NODE_NAME, used to build ICEY_PUBLIC_URL.
var envNames = map[string]bool{
	"ICEY_CONFIG": true, "ICEY_AUTH_TOKEN": true, "ICEY_TURN_SECRET": true,
	"ICEY_METRICS_TOKEN": true, "ICEY_TURN_EXTERNAL_IP": true, "ICEY_SOURCE": true,
	"ICEY_RTSP": true, "ICEY_RTSP_PORT": true, "ICEY_PUBLIC_URL": true,
	"NODE_NAME": true,
}

// object is one decoded manifest document.
type object struct {
	source     string
	kind, name string
	obj        any
}

// newTyped returns the typed object for an apiVersion/kind, or nil.
func newTyped(apiVersion, kind string) any {
	switch apiVersion + "/" + kind {
	case "v1/Namespace":
		return &corev1.Namespace{}
	case "v1/ServiceAccount":
		return &corev1.ServiceAccount{}
	case "v1/ConfigMap":
		return &corev1.ConfigMap{}
	case "v1/Secret":
		return &corev1.Secret{}
	case "v1/Service":
		return &corev1.Service{}
	case "apps/v1/Deployment":
		return &appsv1.Deployment{}
	case "autoscaling/v2/HorizontalPodAutoscaler":
		return &autoscalingv2.HorizontalPodAutoscaler{}
	case "policy/v1/PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}
	case "networking.k8s.io/v1/NetworkPolicy":
		return &networkingv1.NetworkPolicy{}
	}
	return nil
}

// decode strictly decodes the YAML documents of one stream.
func decode(t *testing.T, source string, data []byte) []object {
	t.Helper()
	var out []object
	for i, doc := range splitDocs(data) {
		js, err := yaml.YAMLToJSON(doc)
		if err != nil {
			t.Errorf("%s doc %d: %v", source, i, err)
			continue
		}
		var meta struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := json.Unmarshal(js, &meta); err != nil {
			t.Errorf("%s doc %d: %v", source, i, err)
			continue
		}
		typed := newTyped(meta.APIVersion, meta.Kind)
		if typed == nil {
			t.Errorf("%s doc %d: unknown kind %s/%s (add it to newTyped)", source, i, meta.APIVersion, meta.Kind)
			continue
		}
		dec := json.NewDecoder(bytes.NewReader(js))
		dec.DisallowUnknownFields()
		if err := dec.Decode(typed); err != nil {
			t.Errorf("%s %s/%s: %v", source, meta.Kind, meta.Metadata.Name, err)
			continue
		}
		if meta.Metadata.Name == "" {
			t.Errorf("%s doc %d: %s without metadata.name", source, i, meta.Kind)
		}
		out = append(out, object{source: source, kind: meta.Kind, name: meta.Metadata.Name, obj: typed})
	}
	return out
}

func splitDocs(data []byte) [][]byte {
	var docs [][]byte
	for _, d := range bytes.Split(append([]byte("\n"), data...), []byte("\n---")) {
		if len(bytes.TrimSpace(stripComments(d))) > 0 {
			docs = append(docs, d)
		}
	}
	return docs
}

func stripComments(d []byte) []byte {
	var b bytes.Buffer
	for _, l := range strings.Split(string(d), "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.Bytes()
}

// render runs kustomize on dir (relative to deploy/k8s).
func render(t *testing.T, dir string) []object {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), filepath.Join("..", dir))
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	y, err := m.AsYaml()
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	return decode(t, dir, y)
}

// kustomizations lists every directory under deploy/k8s holding one.
func kustomizations(t *testing.T) []string {
	var dirs []string
	err := filepath.WalkDir("..", func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && d.Name() == "kustomization.yaml" {
			rel, _ := filepath.Rel("..", filepath.Dir(p))
			dirs = append(dirs, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(dirs)
	return dirs
}

func TestKustomizationsRender(t *testing.T) {
	dirs := kustomizations(t)
	for _, want := range []string{"base", "origin", "edge", "overlays/example"} {
		if !contains(dirs, want) {
			t.Errorf("no kustomization.yaml in deploy/k8s/%s", want)
		}
	}
	for _, dir := range dirs {
		t.Run(dir, func(t *testing.T) {
			objs := render(t, dir)
			if len(objs) == 0 {
				t.Fatalf("%s renders nothing", dir)
			}
			for _, o := range objs {
				if o.kind == "Namespace" {
					continue
				}
				l := objectLabels(o.obj)
				if l["app.kubernetes.io/part-of"] != "icey" {
					t.Errorf("%s %s/%s: no app.kubernetes.io/part-of=icey label", dir, o.kind, o.name)
				}
			}
			checkDeployments(t, objs, false)
		})
	}
}

// TestStandaloneManifests keeps the single-node files (referenced from the
// README) valid: deploy/k8s/icey-server.yaml and hpa.yaml.
func TestStandaloneManifests(t *testing.T) {
	var all []object
	for _, f := range []string{"icey-server.yaml", "hpa.yaml"} {
		data, err := os.ReadFile(filepath.Join("..", f))
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, decode(t, f, data)...)
	}
	checkDeployments(t, all, true)
	checkHPAs(t, all)
}

// TestExampleOverlay checks the whole installation as rendered.
func TestExampleOverlay(t *testing.T) {
	objs := render(t, "overlays/example")
	checkDeployments(t, objs, true)
	checkHPAs(t, objs)

	origin := find[*appsv1.Deployment](t, objs, "Deployment", "icey-origin")
	edge := find[*appsv1.Deployment](t, objs, "Deployment", "icey-edge")
	if origin == nil || edge == nil {
		t.Fatal("overlay lacks the icey-origin or icey-edge Deployment")
	}
	if r := origin.Spec.Replicas; r == nil || *r != 1 {
		t.Errorf("icey-origin: want exactly 1 replica (each origin pulls every camera)")
	}
	if origin.Spec.Template.Spec.HostNetwork {
		t.Errorf("icey-origin: no hostNetwork wanted")
	}
	if !hasContainerPort(origin, rtspPort) {
		t.Errorf("icey-origin: container does not declare port %d", rtspPort)
	}
	if envValue(origin, "ICEY_AUTH_TOKEN") != nil {
		t.Errorf("icey-origin sets ICEY_AUTH_TOKEN: the edges' JSON config cannot carry it; the NetworkPolicy guards the origin")
	}

	// Edges: hostNetwork, one per node.
	ps := edge.Spec.Template.Spec
	if !ps.HostNetwork || ps.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
		t.Errorf("icey-edge: want hostNetwork with dnsPolicy ClusterFirstWithHostNet (to resolve icey-origin)")
	}
	if !edgeAntiAffinity(edge) {
		t.Errorf("icey-edge: hostNetwork needs a required pod anti-affinity on kubernetes.io/hostname selecting the edge pods")
	}
	if ru := edge.Spec.Strategy.RollingUpdate; ru == nil || ru.MaxSurge == nil || ru.MaxSurge.IntValue() != 0 {
		t.Errorf("icey-edge: rolling update needs maxSurge 0 (a surge pod has no free node)")
	}
	if v := envValue(edge, "ICEY_PUBLIC_URL"); v == nil || !strings.HasPrefix(v.Value, "https://$(NODE_NAME).") {
		t.Errorf("icey-edge: ICEY_PUBLIC_URL should be node-qualified (https://$(NODE_NAME).<domain>), got %+v", v)
	}
	if !envBefore(edge, "NODE_NAME", "ICEY_PUBLIC_URL") {
		t.Errorf("icey-edge: NODE_NAME must be defined before ICEY_PUBLIC_URL for $(NODE_NAME) to expand")
	}

	// The origin Service exposes RTSP and the ops port to the origin pod.
	svc := find[*corev1.Service](t, objs, "Service", "icey-origin")
	if svc == nil {
		t.Fatal("no Service icey-origin")
	}
	if !servicePort(svc, rtspPort, corev1.ProtocolTCP) || !servicePort(svc, opsPort, corev1.ProtocolTCP) {
		t.Errorf("Service icey-origin: want %d/TCP and %d/TCP", rtspPort, opsPort)
	}
	if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(origin.Spec.Template.Labels)) ||
		labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(edge.Spec.Template.Labels)) {
		t.Errorf("Service icey-origin must select the origin pods and only them")
	}

	// NetworkPolicy: only edges reach the origin's RTSP port.
	np := find[*networkingv1.NetworkPolicy](t, objs, "NetworkPolicy", "icey-origin")
	if np == nil {
		t.Fatal("no NetworkPolicy icey-origin")
	}
	if !selects(&np.Spec.PodSelector, origin.Spec.Template.Labels) {
		t.Errorf("NetworkPolicy icey-origin does not select the origin pods")
	}
	rtspFromEdges := false
	for _, r := range np.Spec.Ingress {
		opens := false
		for _, p := range r.Ports {
			if p.Port != nil && p.Port.IntValue() == rtspPort {
				opens = true
			}
		}
		if !opens {
			continue
		}
		for _, f := range r.From {
			if f.NamespaceSelector != nil && len(f.NamespaceSelector.MatchLabels) == 0 && len(f.NamespaceSelector.MatchExpressions) == 0 {
				t.Errorf("NetworkPolicy icey-origin opens %d to every namespace", rtspPort)
			}
			if f.PodSelector != nil && selects(f.PodSelector, edge.Spec.Template.Labels) {
				rtspFromEdges = true
			}
			if f.IPBlock != nil && f.IPBlock.CIDR == "0.0.0.0/0" {
				t.Errorf("NetworkPolicy icey-origin opens %d to 0.0.0.0/0", rtspPort)
			}
		}
		if len(r.From) == 0 {
			t.Errorf("NetworkPolicy icey-origin opens %d to everyone", rtspPort)
		}
	}
	if !rtspFromEdges {
		t.Errorf("NetworkPolicy icey-origin does not let the edge pods reach %d", rtspPort)
	}

	// PDB and HPA target the edges.
	pdb := find[*policyv1.PodDisruptionBudget](t, objs, "PodDisruptionBudget", "icey-edge")
	if pdb == nil || !selects(pdb.Spec.Selector, edge.Spec.Template.Labels) {
		t.Errorf("no PodDisruptionBudget selecting the edge pods")
	}
	hpa := find[*autoscalingv2.HorizontalPodAutoscaler](t, objs, "HorizontalPodAutoscaler", "icey-edge")
	if hpa == nil || hpa.Spec.ScaleTargetRef.Name != "icey-edge" {
		t.Errorf("no HorizontalPodAutoscaler on the icey-edge Deployment")
	}

	// One image for origin and edges.
	if a, b := edge.Spec.Template.Spec.Containers[0].Image, origin.Spec.Template.Spec.Containers[0].Image; a != b {
		t.Errorf("edge image %q != origin image %q", a, b)
	}

	// The configs: the origin re-serves over RTSP; every edge path pulls
	// the same path from the origin, on demand.
	originCfg := configOf(t, objs, origin)
	edgeCfg := configOf(t, objs, edge)
	if rtsp, _ := originCfg["rtsp"].(map[string]any); rtsp == nil || rtsp["enabled"] != true {
		t.Errorf("origin config: rtsp.enabled must be true")
	}
	if rtsp, _ := originCfg["rtsp"].(map[string]any); rtsp != nil && rtsp["port"] != nil && rtsp["port"] != float64(rtspPort) {
		t.Errorf("origin config: rtsp.port %v, the Service says %d", rtsp["port"], rtspPort)
	}
	originPaths, _ := originCfg["paths"].(map[string]any)
	edgePaths, _ := edgeCfg["paths"].(map[string]any)
	if len(edgePaths) == 0 {
		t.Errorf("edge config has no paths")
	}
	for name, v := range edgePaths {
		p, _ := v.(map[string]any)
		want := fmt.Sprintf("rtsp://icey-origin:%d/%s", rtspPort, name)
		if p["source"] != want || p["sourceOnDemand"] != true {
			t.Errorf("edge path %q: want source %q with sourceOnDemand true, got %v", name, want, p)
		}
		if _, ok := originPaths[name]; !ok {
			t.Errorf("edge path %q: the origin has no such path", name)
		}
	}
}

// checkDeployments: probes, config mount, env names, secret and configmap
// references, one image per render.
func checkDeployments(t *testing.T, objs []object, complete bool) {
	t.Helper()
	images := map[string]bool{}
	for _, o := range objs {
		d, ok := o.obj.(*appsv1.Deployment)
		if !ok {
			continue
		}
		where := o.source + " Deployment/" + o.name
		if d.Spec.Selector == nil || !selects(d.Spec.Selector, d.Spec.Template.Labels) {
			t.Errorf("%s: selector does not match the pod template labels", where)
		}
		for _, c := range d.Spec.Template.Spec.Containers {
			images[c.Image] = true
			checkProbe(t, where+" startupProbe", c.StartupProbe, "/api/started")
			checkProbe(t, where+" livenessProbe", c.LivenessProbe, "/api/health")
			checkProbe(t, where+" readinessProbe", c.ReadinessProbe, "/api/ready")
			if !hasPort(c, opsPort) {
				t.Errorf("%s: container %s does not declare port %d", where, c.Name, opsPort)
			}
			mounted := false
			for _, m := range c.VolumeMounts {
				if m.MountPath == configDir {
					mounted = true
				}
			}
			if !mounted {
				t.Errorf("%s: no volume mounted at %s", where, configDir)
			}
			seen := map[string]bool{}
			for _, e := range c.Env {
				if !envNames[e.Name] {
					t.Errorf("%s: env %s is not one the server reads", where, e.Name)
				}
				if seen[e.Name] {
					t.Errorf("%s: env %s set twice", where, e.Name)
				}
				seen[e.Name] = true
				if e.Name == "ICEY_CONFIG" && e.Value != configPath {
					t.Errorf("%s: ICEY_CONFIG=%q, want %s", where, e.Value, configPath)
				}
				if complete && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
					ref := e.ValueFrom.SecretKeyRef
					s := find[*corev1.Secret](t, objs, "Secret", ref.Name)
					if s == nil {
						t.Errorf("%s: env %s: no Secret %s", where, e.Name, ref.Name)
					} else if _, ok := s.StringData[ref.Key]; !ok {
						if _, ok := s.Data[ref.Key]; !ok {
							t.Errorf("%s: env %s: Secret %s has no key %s", where, e.Name, ref.Name, ref.Key)
						}
					}
				}
			}
			if !seen["ICEY_CONFIG"] {
				t.Errorf("%s: ICEY_CONFIG not set (the healthcheck and server must read the same file)", where)
			}
		}
		if complete {
			for _, v := range d.Spec.Template.Spec.Volumes {
				if v.ConfigMap == nil {
					continue
				}
				cm := find[*corev1.ConfigMap](t, objs, "ConfigMap", v.ConfigMap.Name)
				if cm == nil {
					t.Errorf("%s: volume %s: no ConfigMap %s", where, v.Name, v.ConfigMap.Name)
					continue
				}
				keys := []string{"config.json"}
				if len(v.ConfigMap.Items) > 0 {
					keys = nil
					for _, it := range v.ConfigMap.Items {
						keys = append(keys, it.Key)
					}
				}
				for _, k := range keys {
					if _, ok := cm.Data[k]; !ok {
						t.Errorf("%s: ConfigMap %s has no key %s", where, cm.Name, k)
					}
				}
			}
			if sa := d.Spec.Template.Spec.ServiceAccountName; sa != "" && find[*corev1.ServiceAccount](t, objs, "ServiceAccount", sa) == nil {
				t.Errorf("%s: no ServiceAccount %s", where, sa)
			}
		}
	}
	if len(images) > 1 {
		t.Errorf("more than one container image: %v", images)
	}
}

func checkHPAs(t *testing.T, objs []object) {
	t.Helper()
	for _, o := range objs {
		h, ok := o.obj.(*autoscalingv2.HorizontalPodAutoscaler)
		if !ok {
			continue
		}
		ref := h.Spec.ScaleTargetRef
		if ref.Kind != "Deployment" || find[*appsv1.Deployment](t, objs, "Deployment", ref.Name) == nil {
			t.Errorf("%s HPA/%s: target %s/%s not in the manifests", o.source, o.name, ref.Kind, ref.Name)
		}
		if h.Spec.MinReplicas == nil || *h.Spec.MinReplicas < 1 || *h.Spec.MinReplicas > h.Spec.MaxReplicas {
			t.Errorf("%s HPA/%s: want 1 <= minReplicas <= maxReplicas", o.source, o.name)
		}
		found := false
		for _, m := range h.Spec.Metrics {
			if m.Pods != nil && m.Pods.Metric.Name == "icey_sessions_active" {
				found = true
			}
		}
		if !found {
			t.Errorf("%s HPA/%s: no Pods metric icey_sessions_active", o.source, o.name)
		}
	}
}

func checkProbe(t *testing.T, where string, p *corev1.Probe, path string) {
	t.Helper()
	if p == nil || p.HTTPGet == nil {
		t.Errorf("%s: want an httpGet probe on %s", where, path)
		return
	}
	if p.HTTPGet.Path != path || p.HTTPGet.Port.IntValue() != opsPort {
		t.Errorf("%s: got %s on port %s, want %s on %d", where, p.HTTPGet.Path, p.HTTPGet.Port.String(), path, opsPort)
	}
}

func edgeAntiAffinity(d *appsv1.Deployment) bool {
	a := d.Spec.Template.Spec.Affinity
	if a == nil || a.PodAntiAffinity == nil {
		return false
	}
	for _, term := range a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution {
		if term.TopologyKey == "kubernetes.io/hostname" && selects(term.LabelSelector, d.Spec.Template.Labels) {
			return true
		}
	}
	return false
}

// configOf returns the config.json a Deployment mounts, parsed.
func configOf(t *testing.T, objs []object, d *appsv1.Deployment) map[string]any {
	t.Helper()
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.Name != "config" || v.ConfigMap == nil {
			continue
		}
		key := "config.json"
		for _, it := range v.ConfigMap.Items {
			if it.Path == "config.json" {
				key = it.Key
			}
		}
		cm := find[*corev1.ConfigMap](t, objs, "ConfigMap", v.ConfigMap.Name)
		if cm == nil {
			t.Fatalf("%s: no ConfigMap %s", d.Name, v.ConfigMap.Name)
		}
		var cfg map[string]any
		if err := json.Unmarshal([]byte(cm.Data[key]), &cfg); err != nil {
			t.Fatalf("%s: ConfigMap %s key %s: %v", d.Name, cm.Name, key, err)
		}
		return cfg
	}
	t.Fatalf("%s: no config volume", d.Name)
	return nil
}

func find[T any](t *testing.T, objs []object, kind, name string) T {
	var zero T
	for _, o := range objs {
		if o.kind == kind && o.name == name {
			if v, ok := o.obj.(T); ok {
				return v
			}
		}
	}
	return zero
}

func objectLabels(obj any) map[string]string {
	js, _ := json.Marshal(obj)
	var m struct {
		Metadata struct {
			Labels map[string]string `json:"labels"`
		} `json:"metadata"`
	}
	_ = json.Unmarshal(js, &m)
	return m.Metadata.Labels
}

func selects(s *metav1.LabelSelector, l map[string]string) bool {
	if s == nil {
		return false
	}
	ls, err := metav1.LabelSelectorAsSelector(s)
	return err == nil && !ls.Empty() && ls.Matches(labels.Set(l))
}

func envValue(d *appsv1.Deployment, name string) *corev1.EnvVar {
	for _, c := range d.Spec.Template.Spec.Containers {
		for i := range c.Env {
			if c.Env[i].Name == name {
				return &c.Env[i]
			}
		}
	}
	return nil
}

func envBefore(d *appsv1.Deployment, a, b string) bool {
	for _, c := range d.Spec.Template.Spec.Containers {
		ia, ib := -1, -1
		for i, e := range c.Env {
			if e.Name == a {
				ia = i
			}
			if e.Name == b {
				ib = i
			}
		}
		if ib >= 0 {
			return ia >= 0 && ia < ib
		}
	}
	return false
}

func hasPort(c corev1.Container, port int32) bool {
	for _, p := range c.Ports {
		if p.ContainerPort == port {
			return true
		}
	}
	return false
}

func hasContainerPort(d *appsv1.Deployment, port int32) bool {
	for _, c := range d.Spec.Template.Spec.Containers {
		if hasPort(c, port) {
			return true
		}
	}
	return false
}

func servicePort(s *corev1.Service, port int32, proto corev1.Protocol) bool {
	for _, p := range s.Spec.Ports {
		if p.Port == port && p.Protocol == proto {
			return true
		}
	}
	return false
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
