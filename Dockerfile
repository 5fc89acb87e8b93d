# fastepp's endpoint picker image: a static, CGO-free epp on distroless
# static (no shell, no libc), running as the nonroot user (65532).
#
#   make image                    # podman, docker or buildah, whichever is present
#   docker build -t ghcr.io/fastepp/epp:dev --build-arg VERSION=dev .
#
# GO_IMAGE and BASE_IMAGE may point at mirrors; GOPROXY is passed to the
# module download.
ARG GO_IMAGE=docker.io/library/golang:1.26
ARG BASE_IMAGE=gcr.io/distroless/static-debian12:nonroot

FROM --platform=$BUILDPLATFORM ${GO_IMAGE} AS build
WORKDIR /src
ARG GOPROXY=https://proxy.golang.org,direct
ENV GOPROXY=${GOPROXY} GOFLAGS=-mod=readonly CGO_ENABLED=0
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG TARGETOS=linux
ARG TARGETARCH
ARG VERSION=dev
# -trimpath and no VCS stamping: the same sources give the same binary.
RUN GOOS=${TARGETOS} GOARCH=${TARGETARCH:-$(go env GOARCH)} \
    go build -trimpath -buildvcs=false \
      -ldflags="-s -w -X github.com/fastepp/fastepp/version.Version=${VERSION}" \
      -o /out/epp ./cmd/epp

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="fastepp epp" \
      org.opencontainers.image.description="Envoy ext_proc endpoint picker for LLM inference pools (Gateway API Inference Extension)" \
      org.opencontainers.image.source="https://github.com/fastepp/fastepp" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/epp /epp
# ext_proc gRPC, gRPC health, Prometheus /metrics
EXPOSE 9002 9003 9090
USER 65532:65532
ENTRYPOINT ["/epp"]
