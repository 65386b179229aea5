package slots

import (
	"encoding/binary"
	"fmt"
	"syscall"
)

// listeningInodesDiag asks the kernel (netlink sock_diag) for the inodes of
// TCP sockets in LISTEN state on port. Unlike reading /proc/net/tcp, whose
// size grows with every connection on the host (thousands of TIME_WAIT
// sockets under load make it take hundreds of milliseconds), a dump filtered
// to LISTEN sockets stays small and fast.
func listeningInodesDiag(port int) (map[uint32]bool, error) {
	fd, err := syscall.Socket(syscall.AF_NETLINK, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, syscall.NETLINK_INET_DIAG)
	if err != nil {
		return nil, fmt.Errorf("sock_diag socket: %w", err)
	}
	defer syscall.Close(fd)
	if err := syscall.Bind(fd, &syscall.SockaddrNetlink{Family: syscall.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("sock_diag bind: %w", err)
	}
	out := map[uint32]bool{}
	for _, family := range []uint8{syscall.AF_INET, syscall.AF_INET6} {
		if err := diagDump(fd, family, port, out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

const (
	sockDiagByFamily = 20 // SOCK_DIAG_BY_FAMILY
	tcpListen        = 10 // TCP_LISTEN
	nlmsgHdrLen      = 16
	diagReqLen       = 56 // struct inet_diag_req_v2
	diagMsgMinLen    = 72 // struct inet_diag_msg
)

func diagDump(fd int, family uint8, port int, out map[uint32]bool) error {
	req := make([]byte, nlmsgHdrLen+diagReqLen)
	ne := binary.NativeEndian
	ne.PutUint32(req[0:], uint32(len(req)))
	ne.PutUint16(req[4:], sockDiagByFamily)
	ne.PutUint16(req[6:], syscall.NLM_F_REQUEST|syscall.NLM_F_DUMP)
	ne.PutUint32(req[8:], 1) // sequence
	body := req[nlmsgHdrLen:]
	body[0] = family
	body[1] = syscall.IPPROTO_TCP
	ne.PutUint32(body[4:], 1<<tcpListen)
	if err := syscall.Sendto(fd, req, 0, &syscall.SockaddrNetlink{Family: syscall.AF_NETLINK}); err != nil {
		return fmt.Errorf("sock_diag send: %w", err)
	}
	buf := make([]byte, 32<<10)
	for {
		n, _, err := syscall.Recvfrom(fd, buf, 0)
		if err != nil {
			return fmt.Errorf("sock_diag receive: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return fmt.Errorf("sock_diag parse: %w", err)
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case syscall.NLMSG_DONE:
				return nil
			case syscall.NLMSG_ERROR:
				if len(m.Data) >= 4 {
					if code := int32(ne.Uint32(m.Data)); code != 0 {
						return fmt.Errorf("sock_diag: %w", syscall.Errno(-code))
					}
				}
				return nil
			}
			if len(m.Data) < diagMsgMinLen {
				continue
			}
			// inet_diag_msg: family, state, timer, retrans, then the socket id
			// whose first field is the source port in network byte order.
			sport := binary.BigEndian.Uint16(m.Data[4:6])
			if int(sport) == port {
				out[ne.Uint32(m.Data[68:72])] = true
			}
		}
	}
}
