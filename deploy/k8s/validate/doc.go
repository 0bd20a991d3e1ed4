// Package validate holds the offline checks of deploy/k8s (see
// validate_test.go); it has no code of its own.
package validate
