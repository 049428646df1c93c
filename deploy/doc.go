// Package deploy holds the container deployment of peerbus: the
// Dockerfile of the image built FROM scratch around static binaries,
// the scripts that build it and run docker-compose.yml (build.sh,
// compose.sh, up.sh), and the compose test, behind the build tag
// "compose":
//
//	go test -tags compose -count=1 -v ./deploy/
package deploy
