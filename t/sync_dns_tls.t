#!/usr/bin/perl

# TLS in a cluster defined by a DNS name: the name a node's certificate
# is verified against defaults to its resolved IP address (checked against
# the certificate's IP subjectAltNames), and zone_sync_ssl_name overrides
# it.  The resolver has no valid=: the answers' TTL drives re-resolution.

use strict;
use warnings;

use Test::More;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::Nginx;
use Test::Nginx::Cluster;
use Test::Nginx::DNS;

###############################################################################

my $c = Test::Nginx::Cluster->new(3)->has(qw/http stream stream_ssl zone_sync/)
	->has_daemon('openssl');

eval { require Net::DNS; 1 } or plan(skip_all => 'Net::DNS not installed');

$c->plan(7);

# nginx < 1.25 logs at crit an SSL_shutdown() that finds application data
# after the peer's close_notify (later versions: info); it is nginx's own
# handshake teardown, racing a refused or closing connection
$c->ignore_log(qr/SSL_shutdown\(\) failed \(SSL: .*application data after close notify\)/);


# One file for every node but the listen addresses; each node has its
# own node.crt in its directory (relative paths are relative to it).
my $template = <<'EOF';

%%TEST_GLOBALS%%

events {
}

stream {
    %%TEST_GLOBALS_STREAM%%

    resolver 127.0.0.1:8053 ipv6=off;

    server {
        listen @ADDR@:%%PORT_8081%% ssl;
        ssl_certificate node.crt;
        ssl_certificate_key node.key;

        zone_sync;
        zone_sync_server cluster.test:%%PORT_8081%% resolve;
        zone_sync_interval 10ms;
        zone_sync_connect_retry_interval 200ms;

        zone_sync_ssl on;
        zone_sync_ssl_verify on;
        zone_sync_ssl_trusted_certificate ca.crt;
@SSL_NAME@
    }
}

http {
    %%TEST_GLOBALS_HTTP%%

    keyval_zone zone=h:1m sync;
    keyval $arg_k $hv zone=h;

    server {
        listen @ADDR@:%%PORT_8080%%;

        location /set { set $hv $arg_v; return 200 "ok"; }
        location /get { return 200 "[$hv]"; }
    }
}

EOF

sub conf {
	my ($ssl_name) = @_;
	$c->write_file_expand(sub {
		my ($i) = @_;
		my $conf = $template;
		my $addr = addr($i);
		$conf =~ s/\@ADDR\@/$addr/g;
		$conf =~ s/\@SSL_NAME\@/$ssl_name ? "        zone_sync_ssl_name $ssl_name;" : ''/e;
		return $conf;
	});
}

my $certs = $c->testdir . '/certs';
make_certs($certs);

# nodes 0 and 1: their address as an IP subjectAltName, nothing else;
# node 2: its address only as CN, and a subjectAltName of the DNS name
for my $i (0 .. 2) {
	my $dir = $c->node($i)->testdir;
	system("cp $certs/node$i.crt $dir/node.crt && cp $certs/node$i.key $dir/node.key"
		. " && cp $certs/ca.crt $dir/ca.crt") == 0 or die "cp: $?";
}

conf();

my $dns = Test::Nginx::DNS->new($c);
$dns->set('cluster.test', A => [addr(0), addr(1)], ttl => 1);

$c->run();

my $P = port(8081);

###############################################################################

sub addr { '127.0.0.' . ($_[0] + 1) }

sub get {
	my ($i, $k) = @_;
	my $r = http_get("/get?k=$k", PeerAddr => addr($i) . ':' . port(8080))
		// '';
	return $r =~ /\[(.*)\]/ ? $1 : undef;
}

sub set {
	my ($i, $k, $v) = @_;
	http_get("/set?k=$k&v=$v", PeerAddr => addr($i) . ':' . port(8080));
}

sub on {
	my ($k, $v, @nodes) = @_;
	return wait_for(sub {
		!grep { (get($_, $k) // '') ne $v } @nodes
	}, timeout => 10);
}

sub log_of { $c->node($_[0])->read_file('error.log') // '' }

sub logged {
	my ($re, @nodes) = @_;
	return wait_for(sub { !grep { log_of($_) !~ $re } @nodes }, timeout => 10);
}

###############################################################################

set(0, 'a', 'from0');
ok(on('a', 'from0', 1), 'verified against the IP: node 0 syncs to node 1');
set(1, 'b', 'from1');
ok(on('b', 'from1', 0), 'and node 1 to node 0');

# node 2's certificate names 127.0.0.3 only in its CN: no IP match.
# The TTL is 1s and there is no valid=: the change is seen at once.

$dns->set('cluster.test', A => [addr(0), addr(1), addr(2)], ttl => 1);

ok(logged(qr/zone_sync: node \Q${\addr(2)}:$P\E joined the cluster/, 0, 1),
	'TTL expiry re-resolves');
ok(logged(qr/zone_sync: node \Q${\addr(2)}:$P\E: certificate does not match "\Q${\addr(2)}\E"/, 0, 1),
	'a certificate without the IP is refused');
is(get(2, 'a'), '', 'nothing synced to it');

# zone_sync_ssl_name replaces the default: now only node 2's
# certificate (DNS:cluster.test) matches

conf('cluster.test');
$c->reload_node($_) for 0 .. 2;

set(0, 'c', 'named');
ok(on('c', 'named', 2), 'zone_sync_ssl_name: node 2 verified by name');
ok(logged(qr/zone_sync: node \Q${\addr(1)}:$P\E: certificate does not match "cluster\.test"/, 0),
	'zone_sync_ssl_name: node 1 refused');

###############################################################################

sub make_certs {
	my ($d) = @_;
	mkdir $d or die "mkdir $d: $!";

	my $openssl = sub {
		my ($cmd) = @_;
		system("cd $d && openssl $cmd >>openssl.log 2>&1") == 0
			or die "openssl $cmd failed:\n" . (`cat $d/openssl.log` // '');
	};
	open my $fh, '>', "$d/openssl.cnf" or die "$d/openssl.cnf: $!";
	print $fh <<'EOF';
[ req ]
distinguished_name = dn
[ dn ]
[ ca_ext ]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
[ leaf_ext ]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth,clientAuth
subjectAltName = $ENV::SAN
EOF
	close $fh;

	my $key = '-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes';
	local $ENV{SAN} = 'IP:127.0.0.1';
	$openssl->("req -x509 -new $key -days 30 -subj /CN=ca "
		. "-config openssl.cnf -extensions ca_ext -keyout ca.key -out ca.crt");

	my $serial = 1;
	for (['node0', 'node0', 'IP:127.0.0.1'], ['node1', 'node1', 'IP:127.0.0.2'],
		['node2', '127.0.0.3', 'DNS:cluster.test'])
	{
		my ($name, $cn, $san) = @$_;
		local $ENV{SAN} = $san;
		$openssl->("req -new $key -subj /CN=$cn -config openssl.cnf "
			. "-keyout $name.key -out $name.csr");
		$openssl->("x509 -req -in $name.csr -CA ca.crt -CAkey ca.key "
			. "-set_serial " . $serial++ . " -days 30 "
			. "-extfile openssl.cnf -extensions leaf_ext -out $name.crt");
	}
}

###############################################################################
