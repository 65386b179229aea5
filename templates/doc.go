// Package templates holds the default nginx and HAProxy templates, embedded
// with embed.FS. A user's own template, given by path in the config,
// replaces the default and receives the same variables.
package templates
