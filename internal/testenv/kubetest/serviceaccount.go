package kubetest

import (
	"context"
	"fmt"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
)

// PodLabelerRules are the rules of the chart's Role for the leader
// labeler: read and label pods, and list and watch the EndpointSlices of
// the PeSIT Service (k8s.ServiceEndpoints), nothing else. The first rule
// alone is what a Role without the second grants.
var PodLabelerRules = []rbacv1.PolicyRule{{
	APIGroups: []string{""},
	Resources: []string{"pods"},
	Verbs:     []string{"get", "list", "patch", "watch"},
}, {
	APIGroups: []string{"discovery.k8s.io"},
	Resources: []string{"endpointslices"},
	Verbs:     []string{"list", "watch"},
}}

// EnsureNamespace creates namespace ns if it does not exist.
func (cp *ControlPlane) EnsureNamespace(ctx context.Context, t testing.TB, ns string) {
	t.Helper()
	_, err := cp.AdminClient(t).CoreV1().Namespaces().Create(ctx,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("kubetest: create namespace %s: %v", ns, err)
	}
}

// ServiceAccountConfig creates ServiceAccount ns/name, a Role with rules
// and a RoleBinding between them, asks the TokenRequest API for a token
// valid one hour, and returns a rest.Config that authenticates with that
// token and nothing else: the test runs with exactly the Role's rights.
func (cp *ControlPlane) ServiceAccountConfig(ctx context.Context, t testing.TB, ns, name string, rules []rbacv1.PolicyRule) *rest.Config {
	t.Helper()
	cs := cp.AdminClient(t)
	cp.EnsureNamespace(ctx, t, ns)
	fail := func(what string, err error) {
		t.Helper()
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("kubetest: %s %s/%s: %v", what, ns, name, err)
		}
	}
	_, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx,
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	fail("create service account", err)
	_, err = cs.RbacV1().Roles(ns).Create(ctx,
		&rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: rules}, metav1.CreateOptions{})
	fail("create role", err)
	_, err = cs.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: name, Namespace: ns}},
	}, metav1.CreateOptions{})
	fail("create role binding", err)

	exp := int64(time.Hour / time.Second)
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &exp},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("kubetest: token for %s/%s: %v", ns, name, err)
	}
	return &rest.Config{
		Host:            cp.URL,
		TLSClientConfig: rest.TLSClientConfig{CAData: cp.CAPEM},
		BearerToken:     tr.Status.Token,
	}
}

// Username is the RBAC user name of service account ns/name.
func Username(ns, name string) string {
	return fmt.Sprintf("system:serviceaccount:%s:%s", ns, name)
}
