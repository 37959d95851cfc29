// A gRPC server for the load-generator benchmark: grpc-go with its standard health
// service (every call answered SERVING) and server reflection, so that ghz needs no
// .proto files. Usage: server ADDR
package main

import (
	"log"
	"net"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
)

func main() {
	if len(os.Args) != 2 {
		log.Fatal("usage: server ADDR")
	}
	listener, err := net.Listen("tcp", os.Args[1])
	if err != nil {
		log.Fatal(err)
	}
	server := grpc.NewServer()
	healthpb.RegisterHealthServer(server, health.NewServer())
	reflection.Register(server)
	log.Printf("listening on %s", listener.Addr())
	log.Fatal(server.Serve(listener))
}
