#!/usr/bin/perl

# zone_sync over TLS, what works: a 3-node cluster syncs over TLS and over
# mutual TLS (client certificate with an encrypted key and a password
# file), SNI is sent only with zone_sync_ssl_server_name on, protocols,
# ciphers and OpenSSL commands take effect, TLS sessions are resumed on
# reconnect, and a wrong passphrase list fails nginx -t.
#
# The listening side of a sync connection is an ordinary stream server:
# its access_log, written when a connection closes, shows what the
# connecting node negotiated ($ssl_protocol, $ssl_cipher, $ssl_server_name,
# $ssl_session_reused, $ssl_client_verify).
#
# Refusals (verification, client certificates, protocol mismatches,
# plaintext against TLS) are in sync_tls_refused.t.

use strict;
use warnings;

use Test::More;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::Nginx;
use Test::Nginx::Cluster;

###############################################################################

my $c = Test::Nginx::Cluster->new(3)->has(qw/http stream stream_ssl zone_sync/)
	->has_daemon('openssl');

my $certs = $c->testdir . '/certs';
make_certs($certs);

$c->plan(16);

# a listener refusing a node's client certificate shuts the connection down
# while the node's first frame is in flight: nginx < 1.25 logs that at crit
# (SSL_R_APPLICATION_DATA_AFTER_CLOSE_NOTIFY), later versions at info
# (either end: the listener too when the refusal races its handshake)
$c->ignore_log(qr/SSL_shutdown\(\) failed \(SSL: .*application data after close notify\)/);

my $template = <<'EOF';

%%TEST_GLOBALS%%

events {
}

stream {
    %%TEST_GLOBALS_STREAM%%

    log_format tls '$msec $status $ssl_protocol $ssl_cipher '
                   'sni=[$ssl_server_name] reused=$ssl_session_reused '
                   'client=$ssl_client_verify';

    server {
        listen 127.0.0.1:%%NODE_SYNC%% ssl;
        access_log %%TESTDIR%%/sync.log tls;

        ssl_certificate @CERTS@/node.crt;
        ssl_certificate_key @CERTS@/node.key;
        ssl_protocols TLSv1.2 TLSv1.3;
@LISTENER@

        zone_sync;
@SERVERS@
        zone_sync_interval 10ms;
        zone_sync_connect_retry_interval 200ms;

        zone_sync_ssl on;
        zone_sync_ssl_verify on;
        zone_sync_ssl_trusted_certificate @CERTS@/ca.crt;
@CLIENT@
    }
}

http {
    %%TEST_GLOBALS_HTTP%%

    keyval_zone zone=h:1m sync;
    keyval $arg_k $hv zone=h;

    server {
        listen 127.0.0.1:%%NODE_HTTP%%;

        location /set { set $hv $arg_v; return 200 "ok"; }
        location /get { return 200 "[$hv]"; }
    }
}

EOF

# node $i's nginx.conf (or $o{file}):
#   listener => more lines in the listening server
#   client   => more zone_sync_ssl_* lines
#   to       => the nodes it connects to (default: every node, itself too)
sub conf {
	my ($i, %o) = @_;
	my $conf = $template;
	my @to = $o{to} ? @{$o{to}} : 0 .. $c->size - 1;
	my $servers = join '', map { "zone_sync_server 127.0.0.1:"
		. $c->sync_port($_) . ";\n" } @to;
	$conf =~ s/\@LISTENER\@/indent($o{listener})/e;
	$conf =~ s/\@SERVERS\@/indent($servers)/e;
	$conf =~ s/\@CLIENT\@/indent($o{client})/e;
	$conf =~ s/\@CERTS\@/$certs/g;
	$c->node($i)->write_file_expand($o{file} // 'nginx.conf',
		$c->expand_node($i, $conf));
}

sub indent {
	my ($s) = @_;
	$s //= '';
	$s =~ s/^(?=.)/        /mg;
	$s =~ s/\n$//;
	return $s;
}

conf($_) for 0 .. 2;
$c->run();

###############################################################################

sub get {
	my ($i, $k) = @_;
	my $r = $c->http_get($i, "/get?k=$k") // '';
	return $r =~ /\[(.*)\]/ ? $1 : undef;
}

sub set {
	my ($i, $k, $v) = @_;
	$c->http_get($i, "/set?k=$k&v=$v");
}

sub on {
	my ($i, $k, $v) = @_;
	return wait_for(sub { (get($i, $k) // '') eq $v }, timeout => 10);
}

sub everywhere {
	my ($k, $v) = @_;
	return wait_for(sub {
		!grep { (get($_, $k) // '') ne $v } 0 .. $c->size - 1
	}, timeout => 10);
}

sub restart {
	for my $i (@_) {
		$c->stop_node($i) if $c->node($i)->is_running;
		$c->start_node($i);
	}
}

sub log_size { length($c->node($_[0])->read_file('sync.log') // '') }

# TLS connections node $i accepted and closed since $offset in its
# sync.log: hashes of what was negotiated (connections that never
# completed a handshake, such as the harness's port probes, left out)
sub tls_conns {
	my ($i, $offset) = @_;
	my $log = substr($c->node($i)->read_file('sync.log') // '', $offset);
	my @conns;
	for (split /\n/, $log) {
		my %h;
		@h{qw/msec status protocol cipher sni reused client/} =
			/^(\S+) (\d+) (\S+) (\S+) sni=\[(.*)\] reused=(\S+) client=(\S+)$/
			or next;
		next if $h{cipher} eq '(NONE)' || $h{cipher} eq '-';
		push @conns, \%h;
	}
	return @conns;
}

my $n = 0;

# one connection from node 0 to node 1 with node 0's zone_sync_ssl_*
# settings $client: a record crosses it, then node 0 stops, closing it,
# and node 1 logs it; returns what node 1 saw
sub negotiated {
	my ($client) = @_;
	my $offset = log_size(1);
	conf(0, to => [1], client => $client);
	$c->start_node(0);
	$n++;
	set(0, "n$n", 'x');
	my $synced = on(1, "n$n", 'x');
	$c->stop_node(0);
	my @conns;
	wait_for(sub { @conns = tls_conns(1, $offset) }, timeout => 5);
	my %none = map { $_ => $synced ? 'no connection' : 'not synced' }
		qw/protocol cipher sni reused client/;
	return $synced && @conns ? $conns[-1] : \%none;
}

###############################################################################

# three nodes over TLS, verifying each other's certificate (every node is
# in every list, itself too, and skips itself)

set(0, 'a', 'tls0');
ok(everywhere('a', 'tls0'), 'TLS: write on node 0 reaches nodes 1 and 2');
set(2, 'b', 'tls2');
ok(everywhere('b', 'tls2'), 'TLS: write on node 2 reaches nodes 0 and 1');

# mutual TLS: every listener requires a client certificate from the CA;
# every node presents one, its key encrypted, the passphrase found in a
# list ("wrong", then "secret")

my $mutual_listener = <<"EOF";
ssl_verify_client on;
ssl_client_certificate $certs/ca.crt;
EOF

my $mutual_client = <<"EOF";
zone_sync_ssl_certificate $certs/node.crt;
zone_sync_ssl_certificate_key $certs/node-enc.key;
zone_sync_ssl_password_file $certs/password;
EOF

conf($_, listener => $mutual_listener, client => $mutual_client) for 0 .. 2;
restart(0 .. 2);
my @offsets = map { log_size($_) } 0 .. 2;

set(1, 'c', 'mutual1');
ok(everywhere('c', 'mutual1'), 'mutual TLS: write on node 1 reaches nodes 0 and 2');
set(0, 'd', 'mutual0');
ok(everywhere('d', 'mutual0'), 'mutual TLS: write on node 0 reaches nodes 1 and 2');

# node 2 leaves; its connections to nodes 0 and 1 close and are logged,
# with the result of the client certificate check
$c->stop_node(2);
my @mutual;
wait_for(sub {
	@mutual = map { tls_conns($_, $offsets[$_]) } 0, 1;
	@mutual >= 2;
}, timeout => 5);
ok(@mutual >= 2 && !grep({ $_->{client} ne 'SUCCESS' } @mutual),
	'mutual TLS: the listeners verified the client certificates');

# nodes 0 -> 1 from now on; node 1 keeps the TLS listener of the template

conf(1, to => [0]);
restart(1);
$c->stop_node(0);

# SNI: off by default, on with zone_sync_ssl_server_name, never for an
# IP address; the default protocol and cipher as a baseline

my $h = negotiated("zone_sync_ssl_name node.test;\n");
is($h->{sni}, '-', 'SNI: not sent by default');
is("$h->{protocol} $h->{cipher}", 'TLSv1.3 TLS_AES_256_GCM_SHA384',
	'default protocol and cipher');

$h = negotiated("zone_sync_ssl_name node.test;\n"
	. "zone_sync_ssl_server_name on;\n");
is($h->{sni}, 'node.test', 'SNI: zone_sync_ssl_name sent with server_name on');

$h = negotiated("zone_sync_ssl_server_name on;\n");
is($h->{sni}, '-', 'SNI: not sent for an IP address');

# protocols, ciphers (TLSv1.2) and OpenSSL commands (TLSv1.3 suites)

$h = negotiated("zone_sync_ssl_protocols TLSv1.2;\n"
	. "zone_sync_ssl_ciphers ECDHE-ECDSA-CHACHA20-POLY1305;\n");
is($h->{protocol}, 'TLSv1.2', 'zone_sync_ssl_protocols');
is($h->{cipher}, 'ECDHE-ECDSA-CHACHA20-POLY1305', 'zone_sync_ssl_ciphers');

$h = negotiated("zone_sync_ssl_conf_command Ciphersuites "
	. "TLS_CHACHA20_POLY1305_SHA256;\n");
is("$h->{protocol} $h->{cipher}", 'TLSv1.3 TLS_CHACHA20_POLY1305_SHA256',
	'zone_sync_ssl_conf_command');

# session reuse: node 0 keeps the last session of each node and offers it
# when it reconnects.  The reconnect is forced by restarting node 1, the
# listener, which must then still accept the session: it resumes session
# tickets (TLS 1.3 resumes with tickets only), encrypted with a fixed
# ssl_session_ticket_key (keys of a shared session cache survive a
# reload, not a restart).  TLS 1.3 tickets arrive after the handshake,
# TLS 1.2 sessions with it: both are tested.

$c->node(1)->write_file('ticket.key', join '', map { chr(int rand 256) } 1 .. 80);
conf(1, to => [0], listener => 'ssl_session_ticket_key '
	. $c->node(1)->testdir . "/ticket.key;\n");
restart(1);

for my $protocol (qw/TLSv1.3 TLSv1.2/) {
	my $offset = log_size(1);
	conf(0, to => [1], client => "zone_sync_ssl_protocols $protocol;\n");
	$c->start_node(0);
	set(0, "$protocol-1", 'first');
	on(1, "$protocol-1", 'first');
	restart(1);
	set(0, "$protocol-2", 'second');
	my $synced = on(1, "$protocol-2", 'second');
	$c->stop_node(0);
	my @conns;
	wait_for(sub { (@conns = tls_conns(1, $offset)) >= 2 }, timeout => 5);
	is(join(' ', map { "$_->{protocol}:$_->{reused}" } @conns)
		. ($synced ? '' : ', not synced after the reconnect'),
		"$protocol:. $protocol:r", "$protocol: session resumed on reconnect");
}

# a wrong passphrase list: nginx -t fails and says why

conf(0, file => 'bad.conf', client => <<"EOF");
zone_sync_ssl_certificate $certs/node.crt;
zone_sync_ssl_certificate_key $certs/node-enc.key;
zone_sync_ssl_password_file $certs/bad-password;
EOF
my ($code, $out) = $c->test_config(0, 'bad.conf');
isnt($code, 0, 'wrong passphrases: nginx -t fails');
like($out, qr/\[emerg\].*node-enc\.key.*zone_sync_ssl/,
	'wrong passphrases: the message names the key and the directive');

###############################################################################

sub make_certs {
	my ($d) = @_;
	mkdir $d or die "mkdir $d: $!";

	my $openssl = sub {
		my ($cmd) = @_;
		system("cd $d && openssl $cmd >>openssl.log 2>&1") == 0
			or die "openssl $cmd failed:\n"
				. (Test::Nginx::Util::slurp("$d/openssl.log") // '');
	};
	my $spit = sub { Test::Nginx::Util::spit("$d/$_[0]", $_[1]) };

	$spit->('openssl.cnf', <<'EOF');
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
subjectAltName = IP:127.0.0.1,DNS:node.test
EOF

	my $key = '-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes';
	$openssl->("req -x509 -new $key -days 30 -subj /CN=ca "
		. '-config openssl.cnf -extensions ca_ext -keyout ca.key -out ca.crt');
	$openssl->("req -new $key -subj /CN=node -config openssl.cnf "
		. '-keyout node.key -out node.csr');
	$openssl->('x509 -req -in node.csr -CA ca.crt -CAkey ca.key '
		. '-set_serial 1 -days 30 -extfile openssl.cnf -extensions leaf_ext '
		. '-out node.crt');

	# the same key, encrypted; passphrase lists with and without it
	$openssl->('pkey -in node.key -aes256 -passout pass:secret '
		. '-out node-enc.key');
	$spit->('password', "wrong\nsecret\n");
	$spit->('bad-password', "wrong\nnope\n");
}

###############################################################################
