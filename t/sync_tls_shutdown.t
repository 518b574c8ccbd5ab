#!/usr/bin/perl

# A TLS handshake that ends after its worker began shutting down: the
# connection must be closed, not left open past nginx's sweep of idle
# connections (the worker would exit with "[alert] open socket #N left
# in connection M").  Both ends: node 0 connecting to a TLS peer that
# delays its handshake until node 0 is stopping, and node 1 accepting a
# connection whose client starts TLS only once node 1 is stopping.

use strict;
use warnings;

use Test::More;

use FindBin;
use lib "$FindBin::Bin/lib";

use IO::Socket::INET;
use IO::Socket::SSL;

use Test::Nginx;
use Test::Nginx::Cluster;
use Test::Nginx::Util qw/ slurp spit /;

###############################################################################

my $c = Test::Nginx::Cluster->new(2)->has(qw/http stream stream_ssl zone_sync/)
	->has_daemon('openssl');

my $dir = $c->testdir;
system("openssl req -x509 -new -nodes -days 30 -subj /CN=node "
	. '-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 '
	. "-keyout $dir/node.key -out $dir/node.crt >$dir/openssl.log 2>&1") == 0
	or die "openssl failed:\n" . (slurp("$dir/openssl.log") // '');

$c->plan(4);

# node 0 connects to the slow TLS peer (port 8090) only; node 1 to a port
# where nothing listens
$c->write_file_expand(sub {
	my ($i) = @_;
	my $peer = $i == 0 ? '127.0.0.1:8090' : '127.0.0.1:8091';
	return <<"EOF";

%%TEST_GLOBALS%%

events {
}

stream {
    %%TEST_GLOBALS_STREAM%%

    server {
        listen 127.0.0.1:%%NODE_SYNC%% ssl;
        ssl_certificate $dir/node.crt;
        ssl_certificate_key $dir/node.key;

        zone_sync;
        zone_sync_server $peer;
        zone_sync_connect_retry_interval 200ms;
        zone_sync_ssl on;
    }
}

http {
    %%TEST_GLOBALS_HTTP%%

    keyval_zone zone=h:1m sync;

    server {
        listen 127.0.0.1:%%NODE_HTTP%%;
    }
}

EOF
});

my $log0 = $c->node(0)->testdir . '/error.log';
my $log1 = $c->node(1)->testdir . '/error.log';

# the slow peer: accepts, holds its side of the handshake until node 0
# logs that it is shutting down, then completes it
$c->run_daemon(sub {
	my $l = IO::Socket::INET->new(Listen => 5, ReuseAddr => 1,
		LocalAddr => '127.0.0.1:' . port(8090)) or die "listen: $!";
	spit("$dir/listening", '');
	my $s = $l->accept() or die "accept: $!";
	spit("$dir/accepted", '');
	wait_for(sub { (slurp($log0) // '') =~ /gracefully shutting down/ },
		timeout => 20) or die "node 0 does not stop";
	IO::Socket::SSL->start_SSL($s, SSL_server => 1,
		SSL_cert_file => "$dir/node.crt", SSL_key_file => "$dir/node.key")
		or return;
	1 while sysread($s, my $buf, 4096);
});
wait_for(sub { -e "$dir/listening" }, timeout => 5) or die "no slow peer";

$c->run();

###############################################################################

# node 0: stopped while its handshake with the slow peer is in progress

ok(wait_for(sub { -e "$dir/accepted" }, timeout => 5),
	'outgoing: handshake in progress');
$c->stop_node(0);
like(slurp($log0) // '', qr/gracefully shutting down.*zone_sync: connected to node/s,
	'outgoing: handshake completed while stopping');
unlike(slurp($log0) // '', qr/open socket/,
	'outgoing: connection closed when the handshake ended');

# node 1: a client connects, and starts TLS (then says HELLO) only once
# node 1 is stopping

my $offset = length(slurp($log1) // '');
my $pid = $c->node(1)->run_daemon(sub {
	my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . $c->sync_port(1))
		or die "connect: $!";
	spit("$dir/connected", $s->sockport);
	wait_for(sub {
		substr(slurp($log1) // '', $offset) =~ /gracefully shutting down/
	}, timeout => 20) or die "node 1 does not stop";
	IO::Socket::SSL->start_SSL($s, SSL_verify_mode => SSL_VERIFY_NONE)
		or die "start_SSL: $IO::Socket::SSL::SSL_ERROR";
	spit("$dir/client-handshaked", '');
	my $hello = 'ZSYN' . pack('n', 1) . pack('Q>', 0x1234567) . pack('n', 1)
		. chr(1) . 'h' . chr(1) . pack('n', 1);
	syswrite($s, pack('N', 1 + length $hello) . chr(1) . $hello);
	1 while sysread($s, my $buf, 4096);
});

my $accepted = wait_for(sub {
	my $port = slurp("$dir/connected") or return 0;
	substr(slurp($log1) // '', $offset) =~ /client 127\.0\.0\.1:$port connected/;
}, timeout => 5);
$c->stop_node(1);

# precondition and result in one test
ok($accepted && -e "$dir/client-handshaked"
	&& substr(slurp($log1) // '', $offset) !~ /open socket/,
	'incoming: connection closed when the handshake ended');

###############################################################################
