// Package archtest holds the test that keeps docs/ARCHITECTURE.md's
// import graph true: every import between the module's packages is an
// arrow the document draws, and every arrow it draws is an import.
package archtest
