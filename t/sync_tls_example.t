#!/usr/bin/perl

# nginx-conf/mutual-tls.conf, the mutual-TLS node configuration given to
# operators, run as it is on three nodes: only its addresses, ports and
# certificate directory are rewritten for the test, and a location that
# writes the keyval zone is added.  Certificates are made with the
# commands of docs/TLS.md (IP names instead of host names).

use strict;
use warnings;

use Test::More;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::Nginx;
use Test::Nginx::Cluster;
use Test::Nginx::Util qw/ slurp /;

###############################################################################

my $c = Test::Nginx::Cluster->new(3)->has(qw/http stream stream_ssl zone_sync/)
	->has_daemon('openssl');

my $example = slurp("$FindBin::Bin/../nginx-conf/mutual-tls.conf")
	or plan(skip_all => 'no nginx-conf/mutual-tls.conf');

my $certs = $c->testdir . '/certs';
mkdir $certs or die "mkdir $certs: $!";
my $sh = <<'EOF';
set -e
openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -days 30 -subj "/CN=zone_sync CA" -keyout ca.key -out ca.crt \
    -addext basicConstraints=critical,CA:TRUE \
    -addext keyUsage=critical,keyCertSign,cRLSign
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -subj "/CN=node" -keyout node.key -out node.csr
printf '%s\n' "subjectAltName = IP:127.0.0.1" \
    "extendedKeyUsage = serverAuth, clientAuth" > node.ext
openssl x509 -req -in node.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
    -days 30 -extfile node.ext -out node.crt
EOF
system('sh', '-c', "cd $certs && ($sh) >openssl.log 2>&1") == 0
	or die "openssl failed:\n" . (slurp("$certs/openssl.log") // '');

$c->plan(5);

# nginx < 1.25 logs at crit an SSL_shutdown() that finds application data
# after the peer's close_notify (later versions: info); it is nginx's own
# handshake teardown, racing a refused or closing connection
$c->ignore_log(qr/SSL_shutdown\(\) failed \(SSL: .*application data after close notify\)/);


my $conf = $example;
my $n = 0;
$conf =~ s/^load_module .*\n/%%TEST_GLOBALS%%\n/m or die 'load_module';
$conf =~ s/^stream \{\n/stream {\n    %%TEST_GLOBALS_STREAM%%\n/m or die 'stream';
$conf =~ s!/etc/nginx/zone_sync/!$certs/!g or die 'certificates';
$conf =~ s/listen 9000 ssl;/listen 127.0.0.1:%%NODE_SYNC%% ssl;/ or die 'listen';
$conf =~ s/allow 10\.0\.0\.0\/24;/allow 127.0.0.1;/ or die 'allow';
$conf =~ s/zone_sync_server node(\d)\.example\.com:9000;/
	'zone_sync_server 127.0.0.1:%%NODE' . ($1 - 1) . '_SYNC%%;'/ge == 3
	or die 'zone_sync_server';
$conf =~ s/listen 80;/listen 127.0.0.1:%%NODE_HTTP%%;/ or die 'listen 80';
$conf =~ s/^http \{\n/http {\n    %%TEST_GLOBALS_HTTP%%\n/m or die 'http';
$conf =~ s/^(    server \{\n        listen 127)/    server {
        listen 127.0.0.1:%%NODE_PORT_82%%;
        location \/set { set \$session_user \$arg_user; return 200 ok; }
    }\n\n$1/m or die 'http server';

$c->write_file_expand($conf);
$c->run();

###############################################################################

sub user {
	my ($i, $session) = @_;
	my $r = http("GET / HTTP/1.0\r\nHost: localhost\r\n"
		. "Cookie: session=$session\r\n\r\n", port => $c->http_port($i)) // '';
	return $r =~ /user: (.*)\n/ ? $1 : undef;
}

sub login {
	my ($i, $session, $user) = @_;
	http("GET /set?user=$user HTTP/1.0\r\nHost: localhost\r\n"
		. "Cookie: session=$session\r\n\r\n", port => $c->port($i, 82));
}

sub everywhere {
	my ($session, $user) = @_;
	return wait_for(sub {
		!grep { (user($_, $session) // '') ne $user } 0 .. 2
	}, timeout => 10);
}

is(user(0, 's0'), '', 'no user yet');
login(0, 's0', 'alice');
ok(everywhere('s0', 'alice'), 'session written on node 0 seen everywhere');
login(2, 's2', 'bob');
ok(everywhere('s2', 'bob'), 'session written on node 2 seen everywhere');

# every node reaches its two peers (the first nodes up retry the others
# after zone_sync_connect_retry_interval, 1s)
ok(wait_for(sub {
	3 == grep {
		my @n = $c->node($_)->read_file('error.log') =~ /zone_sync: node .* is online/g;
		@n == 2;
	} 0 .. 2;
}, timeout => 10), 'each node online with two peers');
# (but the refused connections of the first nodes up to the others)
is(join("\n", grep { !/connect\(\) failed \(Connection refused/ }
	map { $c->node($_)->read_file('error.log') =~ /^.*\[error\].*$/mg } 0 .. 2),
	'', 'no errors');

###############################################################################
