#!/usr/bin/perl

# Smoke test of the test harness itself (t/lib/Test/Nginx*).
#
# Runs the plain nginx binary WITHOUT our module, so a harness problem is
# never mistaken for a module bug: one instance with an http and stream
# servers (http, stream, TLS, helper daemon, reload, nginx -t, error log
# checks, stop), then a cluster of two nodes.

use strict;
use warnings;

use Test::More;

use FindBin;
BEGIN {
    # the harness must not depend on the module under test
    $ENV{TEST_NGINX_MODULE} = "$FindBin::Bin/no-such-dir/module.so";
}
use lib "$FindBin::Bin/lib";

use IO::Socket::INET;
use Time::HiRes ();

use Test::Nginx;
use Test::Nginx::Stream qw/ stream /;
use Test::Nginx::Cluster;
use Test::Nginx::Util qw/ proc_alive /;

###############################################################################

my $t = Test::Nginx->new()->has(qw/http stream stream_return proxy/);
my $c = Test::Nginx::Cluster->new(2);

# TLS checks need the ssl modules and openssl(1); skipped otherwise
my $ssl = $t->has_module('http_ssl') && $t->has_module('stream_ssl')
    && grep { -x "$_/openssl" } split /:/, $ENV{PATH};

$t->plan(54);       # + 3 "no alerts in error.log": $t and two nodes

my $dir = $t->testdir();

my $conf = <<'EOF';

%%TEST_GLOBALS%%

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    server {
        listen       127.0.0.1:8080;
        server_name  localhost;

        location / {
            return 200 "hello %%VERSION%%";
        }

        location /json {
            default_type application/json;
            return 200 '{"a":1,"list":[1,2]}';
        }

        location /post {
            return 200 "len=$content_length";
        }
    }

%%HTTP_SSL%%
}

stream {
    %%TEST_GLOBALS_STREAM%%

    server {
        listen       127.0.0.1:%%PORT_8081%%;
        return       "stream-ok";
    }

    server {
        listen       127.0.0.1:8082;
        proxy_pass   127.0.0.1:8090;
    }

    server {
        listen       127.0.0.1:%%PORT_8085_UDP%% udp;
        return       "udp-ok";
    }

%%STREAM_SSL%%
}

EOF

my $http_ssl = <<'EOF';
    server {
        listen       127.0.0.1:8083 ssl;
        ssl_certificate      localhost.crt;
        ssl_certificate_key  localhost.key;

        location / {
            return 200 "https $ssl_protocol";
        }
    }
EOF

my $stream_ssl = <<'EOF';
    server {
        listen       127.0.0.1:8084 ssl;
        ssl_certificate      localhost.crt;
        ssl_certificate_key  localhost.key;
        return       "tls $ssl_protocol";
    }
EOF

sub conf {
    my ($version) = @_;
    my $s = $conf;
    $s =~ s/%%VERSION%%/$version/;
    $s =~ s/%%HTTP_SSL%%\n/$ssl ? $http_ssl : ''/e;
    $s =~ s/%%STREAM_SSL%%\n/$ssl ? $stream_ssl : ''/e;
    return $s;
}

if ($ssl) {
    system("openssl req -x509 -new -nodes -days 1 -subj /CN=localhost "
        . "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
        . "-keyout $dir/localhost.key -out $dir/localhost.crt "
        . ">$dir/openssl.log 2>&1") == 0
        or die "openssl failed: " . $t->read_file('openssl.log');
}

$t->write_file_expand('nginx.conf', conf('v1'));

###############################################################################

# ports, expansion, polling

is(port(8080), port(8080), 'port map is stable');
my @p = map { port($_) } 8080 .. 8084;
is(scalar(keys %{{ map { $_ => 1 } @p }}), 5, 'ports are distinct');
ok(!grep({ $_ >= 8000 && $_ <= 8999 } @p), 'ports are mapped');

my $nginx_conf = $t->read_file('nginx.conf');
like($nginx_conf, qr/^error_log \Q$dir\E\/error\.log debug;$/m,
    'globals: error_log');
like($nginx_conf, qr/listen\s+127\.0\.0\.1:$p[0];/, '127.0.0.1:8080 form');
like($nginx_conf, qr/listen\s+127\.0\.0\.1:$p[1];/, '%%PORT_8081%% form');
unlike($nginx_conf, qr/load_module .*no-such-dir/, 'no load_module without module');

{
    my $fake = "$dir/fake_module.so";
    $t->write_file('fake_module.so', '');
    local $ENV{TEST_NGINX_MODULE} = $fake;
    like($t->test_globals(), qr/^load_module \Q$fake\E;$/m,
        'load_module with module');
    ok($t->has_module('zone_sync'), 'zone_sync present with module');
}
ok(!$t->has_module('zone_sync'), 'zone_sync absent without module');

ok(!eval { $t->expand('%%NO_SUCH_TOKEN%%'); 1 }, 'unknown token dies');

my $n = 0;
is(wait_for(sub { ++$n >= 3 && 'yes' }, interval => 0.01), 'yes',
    'wait_for returns the true value');
my $start = Time::HiRes::time();
ok(!wait_for(sub { 0 }, timeout => 0.2, interval => 0.01)
    && Time::HiRes::time() - $start < 5, 'wait_for gives up');

# nginx -t

my ($code, $out) = $t->test_config();
ok($code == 0 && $out =~ /syntax is ok/, 'test_config ok')
    or diag($out);

$t->write_file('bad.conf', "events {\n}\n\nno_such_directive on;\n");
($code, $out) = $t->test_config('bad.conf');
isnt($code, 0, 'test_config fails');
like($out, qr/\[emerg\] unknown directive "no_such_directive" in \Q$dir\E\/bad\.conf:4/,
    'test_config message');

# start and serve

$t->run_daemon(\&echo_daemon, port(8090));
ok($t->waitforsocket('127.0.0.1:' . port(8090)), 'daemon listening');

$t->run();

my $r = http_get('/');
like($r, qr/^HTTP\/1\.1 200 .*hello v1\z/s, 'http_get');
is(http_status($r), 200, 'http_status');
is(http_content($r), 'hello v1', 'http_content');

my ($status, $json) = http_json($t, GET => '/json');
is($status, 200, 'http_json status');
is_deeply($json, { a => 1, list => [1, 2] }, 'http_json data');

is(http_content(http_post('/post', 'abcde')), 'len=5', 'http_post');

my $s = http('', start => 1);
ok($s, 'http start');
like(http("GET / HTTP/1.0\r\nHost: localhost\r\n\r\n", socket => $s),
    qr/hello v1/, 'http on a started socket');

is(stream('127.0.0.1:' . port(8081))->read(), 'stream-ok', 'stream read');
is(stream(PeerAddr => '127.0.0.1:' . port(8081))->io(''), 'stream-ok',
    'stream io');
is(stream('127.0.0.1:' . port(8082))->io('echo me', length => 7),
    'echo me', 'stream proxy to daemon');
is(stream(PeerAddr => '127.0.0.1:' . port(8085), Proto => 'udp')->io('x'),
    'udp-ok', 'stream udp');

SKIP: {
    skip 'no ssl modules or openssl', 2 unless $ssl;

    like(http_get('/', SSL => 1, port => port(8083)), qr/https TLSv1/,
        'http over TLS');
    like(stream(PeerAddr => '127.0.0.1:' . port(8084), SSL => 1)->read(),
        qr/^tls TLSv1/, 'stream over TLS');
}

# a crashed worker is an alert (respawned; ignored for the final check)

my ($worker) = $t->worker_pids();
kill 'KILL', $worker;
ok(wait_for(sub { $t->read_file('error.log') =~ /exited on signal 9/ }),
    'worker crash logged');
ok(grep({ /exited on signal 9/ } $t->_problems()), 'worker crash detected');
$t->ignore_log(qr/exited on signal 9/);

# reload

my @old = $t->worker_pids();
$t->write_file_expand('nginx.conf', conf('v2'));
ok($t->reload(wait_old => 1), 'reload');
is(http_content(http_get('/')), 'hello v2', 'new configuration');
ok(!grep({ proc_alive($_) } @old), 'old workers gone');

$t->write_file('nginx.conf',
    $t->read_file('nginx.conf') . "\nno_such_directive on;\n");
ok(!$t->reload(), 'reload refused');
$t->ignore_log(qr/unknown directive "no_such_directive"/);
is(http_content(http_get('/')), 'hello v2', 'old configuration kept');

# stop: no processes left

my @pids = $t->pids();
$t->stop();
ok(!grep({ proc_alive($_) } @pids) && !pgrep($dir),
    'stopped, no processes left');
ok(!stream_connects(port(8090)), 'daemon stopped');

###############################################################################

# cluster of two nodes

$c->write_file_expand(<<'EOF');

%%TEST_GLOBALS%%

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    server {
        listen       127.0.0.1:%%NODE_HTTP%%;

        location / {
            return 200 "node %%NODE%% of %%NODES%%";
        }
    }
}

stream {
    server {
        listen       127.0.0.1:%%NODE_SYNC%%;
        return       "sync %%NODE%%";
    }
}

EOF

isnt($c->http_port(0), $c->http_port(1), 'cluster: distinct ports');
is($c->http_port(0), port(8080), 'cluster: node 0 http is port(8080)');
is($c->expand_node(0, "    %%OTHER_SYNC_SERVERS%%\n"),
    "    zone_sync_server 127.0.0.1:" . $c->sync_port(1) . ";\n",
    'cluster: other sync servers');
is($c->expand_node(1, '%%NODE%% %%NODE0_SYNC%% %%NODE_PORT_5%%'),
    '1 ' . $c->sync_port(0) . ' ' . port(8105), 'cluster: node tokens');
is(scalar(() = $c->expand_node(0, "%%ALL_SYNC_SERVERS%%")
    =~ /zone_sync_server/g), 2, 'cluster: all sync servers');

$c->run();

is(http_content(http_get('/')), 'node 0 of 2', 'cluster: node 0 answers');
is(http_content($c->http_get(1, '/')), 'node 1 of 2',
    'cluster: node 1 answers');
is(stream('127.0.0.1:' . $c->sync_port(1))->read(), 'sync 1',
    'cluster: node 1 stream');

$c->stop_node(1);
ok(!stream_connects($c->http_port(1)), 'cluster: node 1 stopped');
is((http_json($c->node(0), GET => '/'))[0], 200, 'cluster: node 0 up');

$c->start_node(1);
ok($c->reload_node(1), 'cluster: node 1 restarted and reloaded');

my @node1 = $c->node(1)->pids();
$c->kill_node(1, 'KILL');
ok(!grep({ proc_alive($_) } @node1), 'cluster: node 1 killed');

$c->start_node(1);
is(http_content(http_get('/', port => $c->http_port(1))), 'node 1 of 2',
    'cluster: node 1 back');

my @all = map { $_->pids() } $c->nodes();
$c->stop();
my $base = $c->testdir();
ok(!grep({ proc_alive($_) } @all) && !pgrep($base),
    'cluster: stopped, no processes left');

###############################################################################

# processes whose command line mentions a directory (the nginx master
# does: "nginx: master process ... -p <dir>/ ...")
sub pgrep {
    my ($dir) = @_;
    open my $fh, '-|', 'pgrep', '-f', "$dir/" or die "pgrep: $!\n";
    my @pids = <$fh>;
    close $fh;
    return @pids;
}

sub stream_connects {
    my ($port) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port",
        Timeout => 1);
    return $s ? 1 : 0;
}

sub echo_daemon {
    my ($port) = @_;
    my $server = IO::Socket::INET->new(LocalAddr => "127.0.0.1:$port",
        Listen => 5, ReuseAddr => 1)
        or die "cannot listen on $port: $!\n";

    while (my $client = $server->accept()) {
        while (sysread($client, my $buf, 4096)) {
            syswrite($client, $buf);
        }
        close $client;
    }
}

###############################################################################
